pub(crate) use crate::rows::{corrupt, store_error};

pub(crate) const BACKEND: &str = <crate::rows::Lite as omniq_sql::Dialect>::BACKEND;
