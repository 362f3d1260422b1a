//! tryst-engine
