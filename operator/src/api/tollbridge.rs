//! tollbridge CRDs (group tollbridge.dev, version v1alpha1).
