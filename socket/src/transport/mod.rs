//! Transports: the glue between the [`Driver`](crate::Driver) and a real
//! socket. Each performs the driver's effects and feeds it what happened;
//! none holds a rule of its own.

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub(crate) mod native;
#[cfg(target_arch = "wasm32")]
pub(crate) mod web;

#[cfg(any(target_arch = "wasm32", feature = "native"))]
pub use weak::WeakSocket;

/// One [`WeakSocket`] for both transports: each shares its state in the
/// handle type of its dispatcher (`Rc` in the browser, `Arc` natively).
#[cfg(any(target_arch = "wasm32", feature = "native"))]
mod weak {
    #[cfg(all(feature = "native", not(target_arch = "wasm32")))]
    use super::native::{Shared, Socket};
    #[cfg(target_arch = "wasm32")]
    use super::web::{Shared, Socket};
    use crate::dispatch::{Handles, TransportHandles};

    /// A [`Socket`] handle that does not keep it alive, for callbacks that
    /// the socket itself owns (see [`Socket::on_event`]): a callback that
    /// held a [`Socket`] would keep the socket, which owns the callback,
    /// alive forever.
    #[derive(Clone)]
    pub struct WeakSocket {
        shared: <TransportHandles as Handles>::Weak<Shared>,
    }

    impl WeakSocket {
        /// A weak handle to the state that `shared` is a strong one to.
        pub(crate) fn new(shared: &<TransportHandles as Handles>::Shared<Shared>) -> Self {
            Self {
                shared: TransportHandles::downgrade(shared),
            }
        }

        /// The socket, unless every [`Socket`] handle was dropped.
        pub fn upgrade(&self) -> Option<Socket> {
            TransportHandles::upgrade(&self.shared).map(Socket::from_shared)
        }
    }
}
