//! Octet server: the tonic gRPC service `octet.v1` over `octet-store` (collections, points, search, admin), with health, reflection, auth and graceful shutdown. Filled in by the server issue.
