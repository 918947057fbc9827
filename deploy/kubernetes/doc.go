// Package kubernetes holds keyward's Kubernetes manifests (the YAML files
// in this folder, applied with kubectl apply -k) and their test, which
// decodes each strictly against the Kubernetes API types and checks the
// properties an operator relies on. It is a Go module of its own so that
// keyward's binary never depends on the Kubernetes API packages.
package kubernetes
