//! The `unblock` executor (access/preread/content handlers on their own C
//! stacks, cooperative time.sleep/socket/resolver) is not finished: see the
//! README's "Not finished" section.
compile_error!("the `unblock` feature is not finished yet; build the default (sync) flavour");
