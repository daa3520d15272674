//! Streams: validated names, patterns over them, bounded replay buffers and the
//! local fan-out registry.

pub mod direct;
pub mod name;
pub mod pattern;
pub mod registry;
pub mod replay;

pub use direct::DirectSocket;
pub use name::{InvalidStreamName, StreamName};
pub use pattern::{InvalidPattern, StreamPattern};
pub use registry::{
    Attachment, Deliveries, Direct, Ending, QueueReceiver, RegistryError, StreamRegistry, SubscriberQueue,
};
pub use replay::ReplayBuffer;
