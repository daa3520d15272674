//! Streams: validated names, patterns over them, bounded replay buffers, the
//! local fan-out registry, subscribers' queues and direct writes to their sockets.

pub mod direct;
pub mod flusher;
pub mod name;
pub mod pattern;
pub mod queue;
pub mod registry;
pub mod replay;

pub use direct::DirectSocket;
pub use name::{InvalidStreamName, StreamName};
pub use pattern::{InvalidPattern, StreamPattern};
pub use queue::{Direct, Ending, QueueReceiver, SubscriberQueue};
pub use registry::{Attachment, Deliveries, RegistryError, StreamRegistry};
pub use replay::ReplayBuffer;
