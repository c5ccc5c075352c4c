"""The OCI distribution client: auth, manifests, blobs, the address guard and pull-secret
credentials. Nothing of Kubernetes."""
