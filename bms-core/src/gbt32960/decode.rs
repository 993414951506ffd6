//! The streaming decoder (see the module docs).
