//! Lossless export and import of named volumes as tar streams, with manifests.
