// latchkey's only script: passkeys (WebAuthn needs JavaScript). Every page
// works without it; the passkey buttons stay hidden until this runs.
"use strict";
(function () {
  if (!window.PublicKeyCredential) return;

  function decode(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function encode(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function ids(list) {
    return (list || []).map(function (c) {
      return Object.assign({}, c, { id: decode(c.id) });
    });
  }
  function creation(o) {
    var pk = o.publicKey;
    pk.challenge = decode(pk.challenge);
    pk.user.id = decode(pk.user.id);
    pk.excludeCredentials = ids(pk.excludeCredentials);
    return { publicKey: pk };
  }
  function request(o) {
    var pk = o.publicKey;
    pk.challenge = decode(pk.challenge);
    pk.allowCredentials = ids(pk.allowCredentials);
    return { publicKey: pk };
  }
  function toJSON(cred) {
    if (typeof cred.toJSON === "function") return cred.toJSON();
    var r = cred.response, response = { clientDataJSON: encode(r.clientDataJSON) };
    if (r.attestationObject) response.attestationObject = encode(r.attestationObject);
    if (r.authenticatorData) response.authenticatorData = encode(r.authenticatorData);
    if (r.signature) response.signature = encode(r.signature);
    if (r.userHandle) response.userHandle = encode(r.userHandle);
    return {
      id: cred.id, rawId: encode(cred.rawId), type: cred.type, response: response,
      clientExtensionResults: cred.getClientExtensionResults()
    };
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body || {})
    });
  }
  function say(el, text) {
    if (!el) return;
    el.textContent = text;
    el.hidden = false;
  }
  async function detail(res) {
    try { return (await res.json()).detail || res.statusText; } catch (e) { return res.statusText; }
  }

  // Sign in: the button (and, where the browser offers it, autofill).
  var button = document.querySelector("[data-passkey-login]");
  if (button) {
    var error = document.querySelector("[data-passkey-error]");
    var pending = null;
    async function signIn(mediation) {
      var start = await post("/webauthn/login/start");
      if (!start.ok) { say(error, await detail(start)); return; }
      var options = request(await start.json());
      if (mediation) {
        pending = new AbortController();
        options.mediation = mediation;
        options.signal = pending.signal;
      }
      var cred = await navigator.credentials.get(options);
      var done = await post("/webauthn/login/finish", toJSON(cred));
      if (done.ok) location.assign(button.dataset.next || "/profile");
      else say(error, await detail(done));
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      if (pending) pending.abort();
      signIn(null).catch(function (e) { say(error, "Passkey sign-in did not complete: " + e.name); });
    });
    if (button.hasAttribute("data-autofill") && PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (ok) {
        if (ok) signIn("conditional").catch(function () {});
      });
    }
  }

  // Register (the two-factor page).
  var form = document.querySelector("[data-passkey-register]");
  if (form) {
    var regError = form.querySelector("[data-passkey-error]");
    form.hidden = false;
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      try {
        var start = await post("/webauthn/register/start");
        if (start.status === 403) { location.assign("/reauth?next=%2Fmfa"); return; }
        if (!start.ok) { say(regError, await detail(start)); return; }
        var cred = await navigator.credentials.create(creation(await start.json()));
        var body = toJSON(cred);
        body.name = form.querySelector("[name=name]").value;
        var done = await post("/webauthn/register/finish", body);
        if (done.ok) location.reload();
        else say(regError, await detail(done));
      } catch (e) {
        say(regError, "The passkey was not created: " + e.name);
      }
    });
  }
})();
