//! TLS for every client the daemon opens (MQTT, Pinecone, buckets, model downloads): rustls
//! with ring's crypto. The clients are built without a provider of their own, so each client
//! constructor calls [`use_ring`] first; it owns nothing else.

/// Makes ring the process's rustls crypto provider, once; later calls change nothing.
pub fn use_ring() {
    // Err only means a provider is already installed (by an earlier call): nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
