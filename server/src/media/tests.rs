//! The relay over real sockets on 127.0.0.1, driven by the hub's call model.
