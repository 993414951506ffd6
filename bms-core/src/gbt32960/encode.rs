//! Writes GB/T 32960.3 packets (see the module docs).
