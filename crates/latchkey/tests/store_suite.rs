//! `store_suite!` as a third-party store would run it: from outside the
//! crate, through the public `test-suite` feature (here on `MemoryStore`).
#![cfg(all(feature = "test-suite", feature = "memory"))]

latchkey::store_suite!(async { Some(latchkey::store::MemoryStore::new()) });
