//! A mail's bodies: the library's plain text, and an HTML alternative
//! (`templates/mail.html`) made from the same text, so the two never say
//! different things.

use askama::Template;
use latchkey::mail::Mail;
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use serde::{Deserialize, Serialize};

/// What is queued (sealed) for one mail.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Body {
    pub text: String,
    pub html: String,
}

#[derive(Template)]
#[template(path = "mail.html")]
struct MailHtml<'a> {
    subject: &'a str,
    blocks: Vec<Block>,
}

/// One paragraph of the text: its lines, or the mail's link alone.
struct Block {
    link: Option<String>,
    lines: Vec<String>,
}

impl Body {
    pub fn of(mail: &Mail) -> Result<Body, askama::Error> {
        let text = mail.text();
        // Only a web link becomes an anchor; anything else stays text.
        let link = mail
            .link()
            .filter(|l| l.starts_with("https://") || l.starts_with("http://"));
        let blocks = text
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match link {
                Some(l) if p == l => Block {
                    link: Some(l.to_owned()),
                    lines: Vec::new(),
                },
                _ => Block {
                    link: None,
                    lines: p.lines().map(str::to_owned).collect(),
                },
            })
            .collect();
        let html = MailHtml {
            subject: mail.subject(),
            blocks,
        }
        .render()?;
        Ok(Body { text, html })
    }

    /// The message as sent: text with an HTML alternative.
    pub fn message(&self, from: &Mailbox, to: &str, subject: &str) -> Result<Message, String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("bad recipient address: {e}"))?;
        Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(
                self.text.clone(),
                self.html.clone(),
            ))
            .map_err(|e| format!("cannot build the message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey::mail::Notice;
    use std::time::Duration;

    fn reset(link: &str, username: &str) -> Mail {
        Mail {
            to: "a@example.com".into(),
            username: username.into(),
            notice: Notice::PasswordReset {
                link: link.into(),
                valid_for: Duration::from_secs(900),
            },
        }
    }

    #[test]
    fn html_shows_the_link_on_its_own_and_escapes_everything() {
        let link = "https://x.example/password/reset?token=abc&x=1";
        let body = Body::of(&reset(link, "<b>mallory</b>")).unwrap();
        assert!(body.text.lines().any(|l| l == link));
        assert!(body.html.contains(
            r#"<a href="https://x.example/password/reset?token=abc&#38;x=1" style="color:#1d4ed8;text-decoration:underline">https://x.example/password/reset?token=abc&#38;x=1</a></p>"#
        ), "{}", body.html);
        assert!(
            body.html.contains("&#60;b&#62;mallory&#60;/b&#62;"),
            "{}",
            body.html
        );
        assert!(!body.html.contains("<b>"));
        assert!(body.html.contains("<title>Reset your password</title>"));
    }

    #[test]
    fn a_link_that_is_not_a_web_address_stays_text() {
        let body = Body::of(&reset("javascript:alert(1)", "bob")).unwrap();
        assert!(!body.html.contains("<a "), "{}", body.html);
        assert!(body.html.contains("javascript:alert(1)"));
    }

    #[test]
    fn a_mail_without_a_link() {
        let mail = Mail {
            to: "a@example.com".into(),
            username: "bob".into(),
            notice: Notice::PasswordChanged,
        };
        let body = Body::of(&mail).unwrap();
        assert!(!body.html.contains("<a "));
        let from: Mailbox = "latchkey@example.com".parse().unwrap();
        let msg = body.message(&from, &mail.to, mail.subject()).unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("Subject: Your password was changed"), "{raw}");
        assert!(body.message(&from, "not an address", "s").is_err());
    }
}
