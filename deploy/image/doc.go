// Package image tests keyward's container image without a container
// engine: image_test.go builds keyward with the root Dockerfile's go build
// line, assembles the image the Dockerfile describes with
// go-containerregistry, checks what it holds and runs keyward from its file
// system as UID 65532 with no shell, behind real Envoy, with the official
// OpenAI SDK as the client.
//
// It is a module of its own so that go-containerregistry stays out of the
// keyward binary's dependencies.
package image
