// Package istio holds keyward's Istio example (the YAML files in this
// folder: the mesh's extension provider, an egress gateway in sidecar
// mode, an egress waypoint in ambient mode, and keyward's host routes) and
// its test, which decodes every document strictly against Istio's and the
// Gateway API's types and checks the properties an operator relies on. It
// is a Go module of its own so that keyward's binary never depends on the
// Istio or Kubernetes API packages.
package istio
