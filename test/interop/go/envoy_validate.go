// interop envoy-validate <bootstrap.yaml>: loads an Envoy bootstrap as Envoy would, against the
// official Envoy v3 API protos (go-control-plane), and refuses it on the first unknown or misspelled
// field, wrong enum value or unresolvable typed_config, then on every protoc-gen-validate rule broken
// (the bootstrap and every typed_config inside it), then on every reference to a cluster that is not
// defined or, for gRPC (SDS), that does not speak HTTP/2.
//
// Prints "OK ..." and exits 0, or one "ERROR ..." line per problem and exits 1.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	// The extensions the bootstrap's typed_configs name must be registered for an Any to resolve;
	// a type not imported here is refused, as an Envoy built without that extension would.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// validatable is what protoc-gen-validate generates on every Envoy message.
type validatable interface{ ValidateAll() error }

// multiError is protoc-gen-validate's list of every rule broken.
type multiError interface{ AllErrors() []error }

// envoyRefs is what the walk collects to check references once every cluster is known.
type envoyRefs struct {
	// TcpProxy.cluster values, by where they are.
	tcpProxyClusters map[string]string
	// GrpcService.envoy_grpc.cluster_name values, by where they are.
	grpcClusters map[string]string
	typedConfigs map[string]int
}

func runEnvoyValidate(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: interop envoy-validate <bootstrap.yaml>")
	}
	file := args[0]
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	problems, summary := validateEnvoyBootstrap(raw)
	if len(problems) == 0 {
		fmt.Printf("OK %s\n", summary)
		return nil
	}
	for _, p := range problems {
		fmt.Printf("ERROR %s\n", strings.ReplaceAll(p, "\n", " "))
	}
	return fmt.Errorf("envoy-validate: %s: %d problem(s)", file, len(problems))
}

func validateEnvoyBootstrap(raw []byte) (problems []string, summary string) {
	// Strict: a key given twice is an error, not "the last one wins".
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return []string{"yaml: " + err.Error()}, ""
	}
	var b bootstrapv3.Bootstrap
	// DiscardUnknown false: an unknown or misspelled field is an error, as in Envoy.
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		// protojson's positions are in the JSON form of the YAML; the field names are what matter.
		return []string{err.Error()}, ""
	}
	problems = append(problems, validationErrors("Bootstrap", &b)...)

	refs := envoyRefs{tcpProxyClusters: map[string]string{}, grpcClusters: map[string]string{}, typedConfigs: map[string]int{}}
	walkEnvoy(b.ProtoReflect(), "bootstrap", &refs, &problems)

	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		if _, dup := clusters[c.GetName()]; dup {
			problems = append(problems, fmt.Sprintf("cluster %q is defined twice", c.GetName()))
		}
		clusters[c.GetName()] = c
	}
	listeners := map[string]bool{}
	for _, l := range b.GetStaticResources().GetListeners() {
		if listeners[l.GetName()] {
			problems = append(problems, fmt.Sprintf("listener %q is defined twice", l.GetName()))
		}
		listeners[l.GetName()] = true
	}
	for _, where := range sortedKeys(refs.tcpProxyClusters) {
		name := refs.tcpProxyClusters[where]
		if _, ok := clusters[name]; !ok {
			problems = append(problems, fmt.Sprintf("%s: tcp_proxy cluster %q is not defined", where, name))
		}
	}
	for _, where := range sortedKeys(refs.grpcClusters) {
		name := refs.grpcClusters[where]
		c, ok := clusters[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: envoy_grpc cluster %q is not defined", where, name))
		case !speaksHTTP2(c):
			problems = append(problems, fmt.Sprintf("%s: envoy_grpc cluster %q does not speak HTTP/2, which gRPC needs (typed_extension_protocol_options %s explicit_http_config.http2_protocol_options)", where, name, httpProtocolOptionsKey))
		}
	}

	types := make([]string, 0, len(refs.typedConfigs))
	for _, t := range sortedKeys(refs.typedConfigs) {
		types = append(types, fmt.Sprintf("%s x%d", strings.TrimPrefix(t, "envoy.extensions."), refs.typedConfigs[t]))
	}
	summary = fmt.Sprintf("%d listener(s), %d cluster(s), typed configs: %s",
		len(b.GetStaticResources().GetListeners()), len(clusters), strings.Join(types, ", "))
	return problems, summary
}

// validationErrors runs protoc-gen-validate's rules on m and returns every one broken.
func validationErrors(where string, m proto.Message) []string {
	v, ok := m.(validatable)
	if !ok {
		return nil
	}
	err := v.ValidateAll()
	if err == nil {
		return nil
	}
	var all []error
	if me, ok := err.(multiError); ok {
		all = me.AllErrors()
	} else {
		all = []error{err}
	}
	out := make([]string, 0, len(all))
	for _, e := range all {
		out = append(out, fmt.Sprintf("%s: validation: %v", where, e))
	}
	return out
}

// walkEnvoy visits every message set in m. protoc-gen-validate stops at google.protobuf.Any, so
// each Any is unpacked here, validated on its own, and walked in turn.
func walkEnvoy(m protoreflect.Message, path string, refs *envoyRefs, problems *[]string) {
	switch x := m.Interface().(type) {
	case *anypb.Any:
		inner, err := x.UnmarshalNew()
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("%s: typed_config %q: %v", path, x.GetTypeUrl(), err))
			return
		}
		name := string(inner.ProtoReflect().Descriptor().FullName())
		refs.typedConfigs[name]++
		inPath := fmt.Sprintf("%s<%s>", path, name)
		*problems = append(*problems, validationErrors(inPath, inner)...)
		walkEnvoy(inner.ProtoReflect(), inPath, refs, problems)
		return
	case *tcpproxyv3.TcpProxy:
		if c := x.GetCluster(); c != "" {
			refs.tcpProxyClusters[path] = c
		}
	case *corev3.GrpcService_EnvoyGrpc:
		refs.grpcClusters[path] = x.GetClusterName()
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walkEnvoy(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), refs, problems)
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walkEnvoy(mv.Message(), fmt.Sprintf("%s[%s]", p, k.String()), refs, problems)
					return true
				})
			}
		case fd.Message() != nil:
			walkEnvoy(v.Message(), p, refs, problems)
		}
		return true
	})
}

// speaksHTTP2 says whether a cluster's upstream connections are HTTP/2, as a gRPC cluster's must be.
func speaksHTTP2(c *clusterv3.Cluster) bool {
	//nolint:staticcheck // the deprecated field still works in Envoy; accept it too.
	if c.GetHttp2ProtocolOptions() != nil {
		return true
	}
	a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if !ok {
		return false
	}
	var o httpv3.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil {
		return false
	}
	return o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
