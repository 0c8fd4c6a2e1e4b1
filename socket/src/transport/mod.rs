//! Transports: the glue between the [`Driver`](crate::Driver) and a real
//! socket. Each performs the driver's effects and feeds it what happened;
//! none holds a rule of its own.

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub(crate) mod native;
#[cfg(target_arch = "wasm32")]
pub(crate) mod web;
