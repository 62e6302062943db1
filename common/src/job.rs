//! TODO(owner writing it now).
