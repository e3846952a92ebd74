pub(crate) use omniq_sql::{deadline, to_micros};
