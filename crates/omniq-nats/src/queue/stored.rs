//! A task as the tasks bucket keeps it: the state machine every compare-and-set store
//! shares (`omniq_storage::kv_task`).

pub(crate) use omniq_storage::kv_task::{Applied, KvTask as Stored, expiry_reason, ready_state};
