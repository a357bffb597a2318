//! The one conversion of a store error into each interface's WIT `error`.

use crate::store::StoreError;

macro_rules! from_store_error {
    ($($wit:path),* $(,)?) => {$(
        impl From<StoreError> for $wit {
            fn from(err: StoreError) -> Self {
                use $wit as Wit;
                match err {
                    StoreError::InvalidInput(m) => Wit::InvalidInput(m),
                    StoreError::Conflict(m) => Wit::Conflict(m),
                    StoreError::NotFound(m) => Wit::NotFound(m),
                    StoreError::LimitExceeded(m) => Wit::LimitExceeded(m),
                    StoreError::Unavailable(m) => Wit::Unavailable(m),
                }
            }
        }
    )*};
}

from_store_error!(
    super::bindings::kiln::platform::auth::Error,
    super::bindings::kiln::platform::database::Error,
    super::bindings::kiln::platform::scheduler::Error,
    super::bindings::kiln::platform::storage::Error,
);
