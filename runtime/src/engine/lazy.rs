//! A value built on first use: a function's component is loaded by its first
//! invocation, so deployed functions that are never called cost no memory.

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

type Load<T, E> = Box<dyn Fn() -> BoxFuture<'static, Result<T, E>> + Send + Sync>;

pub struct Lazy<T, E> {
    value: OnceCell<T>,
    load: Load<T, E>,
}

impl<T, E> Lazy<T, E> {
    pub fn new(
        load: impl Fn() -> BoxFuture<'static, Result<T, E>> + Send + Sync + 'static,
    ) -> Self {
        Lazy {
            value: OnceCell::new(),
            load: Box::new(load),
        }
    }

    /// The value, loading it if no caller has yet. Concurrent first callers
    /// share one load; a failed load is tried again by the next caller.
    pub async fn get(&self) -> Result<&T, E> {
        self.value.get_or_try_init(|| (self.load)()).await
    }
}
