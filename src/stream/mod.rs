//! Streams: validated names, bounded replay buffers and the local fan-out registry.

pub mod name;
pub mod registry;
pub mod replay;

pub use name::{InvalidStreamName, StreamName};
pub use registry::{Attachment, QueueReceiver, RegistryError, StreamRegistry, SubscriberQueue};
pub use replay::ReplayBuffer;
