import Testing
@testable import ServiceModel

/// Each class of malformed object is skipped whole, with the object, source and field named,
/// while a good object in the same text still decodes.
@Suite struct ValidationTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var label: String
        var yaml: String
        var object: ObjectRef
        var field: String
        var message: String

        var testDescription: String { label }
    }

    static func service(_ spec: String, name: String = "bad", namespace: String = "shop", status: String = "") -> String {
        """
        apiVersion: v1
        kind: Service
        metadata: {name: \(name), namespace: \(namespace)}
        spec:
        \(spec.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        \(status)
        """
    }

    static func slice(_ body: String, labels: String = "{kubernetes.io/service-name: web}") -> String {
        """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: bad, namespace: shop, labels: \(labels)}
        \(body)
        """
    }

    static let badService = ObjectRef(kind: "Service", namespace: "shop", name: "bad")
    static let badSlice = ObjectRef(kind: "EndpointSlice", namespace: "shop", name: "bad")
    static let ports = "ports: [{port: 80}]"

    static let cases: [Case] = [
        Case(label: "invalid clusterIP", yaml: service("clusterIP: 10.0.0.300\n\(ports)"),
             object: badService, field: "spec.clusterIP", message: "\"10.0.0.300\" is not an IP address"),
        Case(label: "invalid clusterIPs entry", yaml: service("clusterIPs: [10.0.0.3, \"fd00::zz\"]\n\(ports)"),
             object: badService, field: "spec.clusterIPs[1]", message: "\"fd00::zz\" is not an IP address"),
        Case(label: "clusterIPs with a repeated family", yaml: service("clusterIPs: [10.0.0.3, 10.0.0.4]\n\(ports)"),
             object: badService, field: "spec.clusterIPs[1]",
             message: "second IPv4 address 10.0.0.4: a service has at most one cluster IP per family"),
        Case(label: "clusterIP disagreeing with clusterIPs", yaml: service("clusterIP: 10.0.0.9\nclusterIPs: [10.0.0.3]\n\(ports)"),
             object: badService, field: "spec.clusterIP", message: "\"10.0.0.9\" does not match spec.clusterIPs[0]"),
        Case(label: "clusterIPs of the wrong ipFamilies order",
             yaml: service("ipFamilies: [IPv6, IPv4]\nclusterIPs: [10.0.0.3, \"fd00::3\"]\n\(ports)"),
             object: badService, field: "spec.clusterIPs[0]", message: "10.0.0.3 is IPv4 but spec.ipFamilies[0] is IPv6"),
        Case(label: "unknown ipFamily", yaml: service("ipFamilies: [IPv5]\n\(ports)"),
             object: badService, field: "spec.ipFamilies[0]", message: "unknown IP family \"IPv5\" (expected IPv4 or IPv6)"),
        Case(label: "invalid externalIP", yaml: service("clusterIP: 10.0.0.3\nexternalIPs: [1.2.3]\n\(ports)"),
             object: badService, field: "spec.externalIPs[0]", message: "\"1.2.3\" is not an IP address"),
        Case(label: "invalid load-balancer ingress IP",
             yaml: service("clusterIP: 10.0.0.3\n\(ports)", status: "status: {loadBalancer: {ingress: [{ip: 192.0.2.256}]}}"),
             object: badService, field: "status.loadBalancer.ingress[0].ip", message: "\"192.0.2.256\" is not an IP address"),
        Case(label: "unknown ipMode",
             yaml: service("clusterIP: 10.0.0.3\n\(ports)", status: "status: {loadBalancer: {ingress: [{ip: 192.0.2.1, ipMode: Direct}]}}"),
             object: badService, field: "status.loadBalancer.ingress[0].ipMode",
             message: "unknown ipMode \"Direct\" (expected VIP or Proxy)"),
        Case(label: "invalid source range", yaml: service("loadBalancerSourceRanges: [10.0.0.0/33]\n\(ports)"),
             object: badService, field: "spec.loadBalancerSourceRanges[0]",
             message: "\"10.0.0.0/33\" is not a CIDR (expected address/length, e.g. 10.0.0.0/16)"),
        Case(label: "source range without a length", yaml: service("loadBalancerSourceRanges: [10.0.0.1]\n\(ports)"),
             object: badService, field: "spec.loadBalancerSourceRanges[0]",
             message: "\"10.0.0.1\" is not a CIDR (expected address/length, e.g. 10.0.0.0/16)"),
        Case(label: "port out of range", yaml: service("ports: [{name: a, port: 80}, {name: b, port: 70000}]"),
             object: badService, field: "spec.ports[1].port", message: "70000 is out of range 1-65535"),
        Case(label: "port zero", yaml: service("ports: [{port: 0}]"),
             object: badService, field: "spec.ports[0].port", message: "0 is out of range 1-65535"),
        Case(label: "missing port", yaml: service("ports: [{name: a}]"),
             object: badService, field: "spec.ports[0].port", message: "is required"),
        Case(label: "quoted port number", yaml: service("ports: [{port: \"80\"}]"),
             object: badService, field: "spec.ports[0].port", message: "expected an integer, got \"80\""),
        Case(label: "nodePort out of range", yaml: service("type: NodePort\nports: [{port: 80, nodePort: 70000}]"),
             object: badService, field: "spec.ports[0].nodePort", message: "70000 is out of range 0-65535"),
        Case(label: "targetPort out of range", yaml: service("ports: [{port: 80, targetPort: 65536}]"),
             object: badService, field: "spec.ports[0].targetPort", message: "65536 is out of range 0-65535"),
        Case(label: "targetPort as a quoted number", yaml: service("ports: [{port: 80, targetPort: \"8080\"}]"),
             object: badService, field: "spec.ports[0].targetPort",
             message: "\"8080\" is a quoted number: write it unquoted for a port number, or use a container port name"),
        Case(label: "duplicate nodePort", yaml: service("type: NodePort\nports: [{name: a, port: 80, nodePort: 30001}, {name: b, port: 81, nodePort: 30001}]"),
             object: badService, field: "spec.ports[1]", message: "duplicate nodePort 30001/TCP (also spec.ports[0])"),
        Case(label: "unknown protocol", yaml: service("ports: [{port: 80, protocol: ICMP}]"),
             object: badService, field: "spec.ports[0].protocol", message: "unknown protocol \"ICMP\" (expected TCP, UDP or SCTP)"),
        Case(label: "lowercase protocol", yaml: service("ports: [{port: 80, protocol: tcp}]"),
             object: badService, field: "spec.ports[0].protocol", message: "unknown protocol \"tcp\" (expected TCP, UDP or SCTP)"),
        Case(label: "unknown service type", yaml: service("type: Internal\n\(ports)"),
             object: badService, field: "spec.type",
             message: "unknown service type \"Internal\" (expected ClusterIP, NodePort, LoadBalancer or ExternalName)"),
        Case(label: "unknown externalTrafficPolicy", yaml: service("externalTrafficPolicy: Global\n\(ports)"),
             object: badService, field: "spec.externalTrafficPolicy",
             message: "unknown externalTrafficPolicy \"Global\" (expected Cluster or Local)"),
        Case(label: "unknown internalTrafficPolicy", yaml: service("internalTrafficPolicy: local\n\(ports)"),
             object: badService, field: "spec.internalTrafficPolicy",
             message: "unknown internalTrafficPolicy \"local\" (expected Cluster or Local)"),
        Case(label: "unknown sessionAffinity", yaml: service("sessionAffinity: Cookie\n\(ports)"),
             object: badService, field: "spec.sessionAffinity",
             message: "unknown sessionAffinity \"Cookie\" (expected None or ClientIP)"),
        Case(label: "affinity timeout out of range",
             yaml: service("sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}\n\(ports)"),
             object: badService, field: "spec.sessionAffinityConfig.clientIP.timeoutSeconds", message: "86401 is out of range 1-86400"),
        Case(label: "invalid namespace", yaml: service(ports, namespace: "Shop_1"),
             object: ObjectRef(kind: "Service", namespace: "Shop_1", name: "bad"), field: "metadata.namespace",
             message: "\"Shop_1\" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"),
        Case(label: "service name too long", yaml: service(ports, name: String(repeating: "a", count: 64)),
             object: ObjectRef(kind: "Service", namespace: "shop", name: String(repeating: "a", count: 64)), field: "metadata.name",
             message: "\"\(String(repeating: "a", count: 64))\" is longer than 63 characters"),
        Case(label: "service name with a dot", yaml: service(ports, name: "web.v2"),
             object: ObjectRef(kind: "Service", namespace: "shop", name: "web.v2"), field: "metadata.name",
             message: "\"web.v2\" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"),
        Case(label: "port name too long", yaml: service("ports: [{name: \(String(repeating: "p", count: 64)), port: 80}]"),
             object: badService, field: "spec.ports[0].name", message: "\"\(String(repeating: "p", count: 64))\" is longer than 63 characters"),
        Case(label: "port name with uppercase", yaml: service("ports: [{name: HTTP, port: 80}]"),
             object: badService, field: "spec.ports[0].name",
             message: "\"HTTP\" is not a valid port name: use lowercase letters, digits and '-', starting and ending with a letter or digit"),
        Case(label: "unnamed port among several", yaml: service("ports: [{name: a, port: 80}, {port: 81}]"),
             object: badService, field: "spec.ports[1].name", message: "is required when a service has more than one port"),
        Case(label: "duplicate port name", yaml: service("ports: [{name: a, port: 80}, {name: a, port: 81, protocol: UDP}]"),
             object: badService, field: "spec.ports[1]", message: "duplicate name \"a\" (also spec.ports[0])"),
        Case(label: "duplicate port and protocol", yaml: service("ports: [{name: a, port: 80}, {name: b, port: 80}]"),
             object: badService, field: "spec.ports[1]", message: "duplicate port 80/TCP (also spec.ports[0])"),
        Case(label: "missing metadata.name", yaml: "apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\nspec: {\(ports)}",
             object: ObjectRef(kind: "Service", namespace: "shop", name: ""), field: "metadata.name", message: "is required"),
        Case(label: "string where a mapping is expected", yaml: "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: shop}\nspec: oops",
             object: badService, field: "spec", message: "expected a mapping, got oops"),
        Case(label: "mapping where a list is expected", yaml: service("ports: {port: 80}"),
             object: badService, field: "spec.ports", message: "expected a list, got a mapping"),
        Case(label: "list where a string is expected", yaml: service("clusterIP: [10.0.0.1]\n\(ports)"),
             object: badService, field: "spec.clusterIP", message: "expected a string, got a list"),
        Case(label: "selector that is not a map", yaml: service("selector: [app]\n\(ports)"),
             object: badService, field: "spec.selector", message: "expected a mapping, got a list"),

        Case(label: "endpoint address of the wrong family",
             yaml: slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [\"fd00::1\"]}]"),
             object: badSlice, field: "endpoints[1].addresses[0]",
             message: "EndpointSlice addressType IPv4 but endpoints[1].addresses[0] is IPv6 fd00::1"),
        Case(label: "invalid endpoint address", yaml: slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.256]}]"),
             object: badSlice, field: "endpoints[0].addresses[0]", message: "\"10.0.0.256\" is not an IP address"),
        Case(label: "unknown addressType", yaml: slice("addressType: IPv5"),
             object: badSlice, field: "addressType", message: "unknown addressType \"IPv5\" (expected IPv4, IPv6 or FQDN)"),
        Case(label: "missing addressType", yaml: slice("endpoints: []"),
             object: badSlice, field: "addressType", message: "is required"),
        Case(label: "slice without service-name label", yaml: slice("addressType: IPv4", labels: "{app: web}"),
             object: badSlice, field: "metadata.labels[\"kubernetes.io/service-name\"]",
             message: "is missing: it names the service the slice belongs to"),
        Case(label: "slice port out of range", yaml: slice("addressType: IPv4\nports: [{name: http, port: 70000}]"),
             object: badSlice, field: "ports[0].port", message: "70000 is out of range 0-65535"),
        Case(label: "slice port with unknown protocol", yaml: slice("addressType: IPv4\nports: [{port: 80, protocol: QUIC}]"),
             object: badSlice, field: "ports[0].protocol", message: "unknown protocol \"QUIC\" (expected TCP, UDP or SCTP)"),
        Case(label: "slice duplicate port", yaml: slice("addressType: IPv4\nports: [{name: a, port: 80}, {name: a, port: 81}]"),
             object: badSlice, field: "ports[1]", message: "duplicate port \"a\"/TCP"),
        Case(label: "endpoint condition that is not a boolean",
             yaml: slice("addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: \"yes please\"}}]"),
             object: badSlice, field: "endpoints[0].conditions.ready", message: "expected true or false, got \"yes please\""),

        Case(label: "invalid pod IP",
             yaml: "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: shop}\nstatus: {podIP: 10.244.0.300}",
             object: ObjectRef(kind: "Pod", namespace: "shop", name: "bad"), field: "status.podIP",
             message: "\"10.244.0.300\" is not an IP address"),
        Case(label: "pod IPs with a repeated family",
             yaml: "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: shop}\nstatus: {podIPs: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]}",
             object: ObjectRef(kind: "Pod", namespace: "shop", name: "bad"), field: "status.podIPs[1].ip",
             message: "second IPv4 address 10.0.0.2: a pod has at most one IP per family"),
        Case(label: "container port out of range",
             yaml: "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: shop}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}",
             object: ObjectRef(kind: "Pod", namespace: "shop", name: "bad"), field: "spec.containers[0].ports[0].containerPort",
             message: "0 is out of range 1-65535"),
        Case(label: "invalid node address",
             yaml: "apiVersion: v1\nkind: Node\nmetadata: {name: node-x}\nstatus: {addresses: [{type: InternalIP, address: 192.168.1.999}]}",
             object: ObjectRef(kind: "Node", namespace: "", name: "node-x"), field: "status.addresses[0].address",
             message: "\"192.168.1.999\" is not an IP address"),
        Case(label: "invalid pod CIDR",
             yaml: "apiVersion: v1\nkind: Node\nmetadata: {name: node-x}\nspec: {podCIDRs: [10.244.0.0/24, 10.245.0.0/24]}",
             object: ObjectRef(kind: "Node", namespace: "", name: "node-x"), field: "spec.podCIDRs[1]",
             message: "second IPv4 pod CIDR 10.245.0.0/24: at most one per family"),
        Case(label: "node name with uppercase", yaml: "apiVersion: v1\nkind: Node\nmetadata: {name: Node-X}",
             object: ObjectRef(kind: "Node", namespace: "", name: "Node-X"), field: "metadata.name",
             message: "\"Node-X\" is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"),
        Case(label: "invalid service CIDR",
             yaml: "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: extra}\nspec: {cidrs: [10.96.0.0/40]}",
             object: ObjectRef(kind: "ServiceCIDR", namespace: "", name: "extra"), field: "spec.cidrs[0]",
             message: "\"10.96.0.0/40\" is not a CIDR (expected address/length, e.g. 10.0.0.0/16)"),
    ]

    static let goodService = """
        apiVersion: v1
        kind: Service
        metadata: {name: good, namespace: shop}
        spec: {clusterIP: 10.96.0.8, ports: [{port: 80}]}
        """

    @Test(arguments: cases)
    func malformedObjectIsSkippedAndNamed(_ testCase: Case) throws {
        let text = Self.goodService + "\n---\n" + testCase.yaml + "\n---\n" + Self.goodService.replacingGoodName()
        let state = StateDecoder.decode(text, source: "state.yaml")
        #expect(state.problems == [
            Problem(object: testCase.object, source: "state.yaml, document 2", field: testCase.field, message: testCase.message),
        ])
        // Only the bad object is missing: the good ones around it decode.
        #expect(state.services.map(\.name) == ["good", "good-2"])
        #expect(state.endpointSlices.isEmpty && state.pods.isEmpty && state.nodes.isEmpty && state.serviceCIDRs.isEmpty)
    }

    /// Names exactly at the limits are accepted.
    @Test func namesAtTheLimitsDecode() throws {
        let name = String(repeating: "n", count: 63)
        let state = StateDecoder.decode(
            Self.service("ports: [{name: http-management, port: 80}]", name: name, namespace: String(repeating: "s", count: 63)),
            source: "s")
        #expect(state.problems == [])
        let service = try #require(state.services.first)
        #expect(service.name == name)
        #expect(service.ports.map(\.name) == ["http-management"])
    }

    /// Aliases that multiply a document far beyond its size are refused, not expanded.
    @Test func aliasExpansionIsRefused() {
        var text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1..<9 {
            text += "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        let state = StateDecoder.decode(text, source: "bomb")
        #expect(state.problems.map(\.message) == [
            "not valid YAML or JSON: the document expands to too many nodes (aliases repeated too often)",
        ])
    }

    /// Every field of a valid Service replaced by values of the wrong type: the decoder must never
    /// trap, and must either decode the Service or report it skipped.
    @Test func wrongTypesNeverTrap() {
        let lines = StateDecoderTests.serviceYAML.split(separator: "\n", omittingEmptySubsequences: false)
        let replacements = ["[1, 2]", "{a: b}", "\"text\"", "-5", "99999999999999999999999", "~", "true", "1.5", "''", "&x [*x]"]
        var decodedOrReported = 0
        var runs = 0
        for (index, line) in lines.enumerated() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            for replacement in replacements {
                var mutated = lines
                mutated[index] = line[...colon] + " " + replacement
                let state = StateDecoder.decode(mutated.joined(separator: "\n"), source: "fuzz")
                runs += 1
                if state.services.count == 1 || !state.problems.isEmpty { decodedOrReported += 1 }
            }
        }
        #expect(runs > 300)
        #expect(decodedOrReported == runs)
    }

    @Test(arguments: [
        "[", "{", "}", "a: [b", "\t- x", "%YAML 9.9\n---\na: 1", "\u{0}", "kind: Service\nkind: Pod",
        String(repeating: "[", count: 5000), "a: &x b\nc: *y",
        "apiVersion: v1\nkind: List\nitems: 5", "apiVersion: v1\nkind: List\nitems: [1, [2], {kind: 3}]",
        "apiVersion: v1\nkind: Service\nmetadata: []", "apiVersion: [v1]\nkind: Service",
    ])
    func garbageBecomesProblems(_ text: String) {
        let state = StateDecoder.decode(text, source: "junk")
        #expect(state.services.isEmpty)
        #expect(!state.problems.isEmpty)
    }
}

private extension String {
    func replacingGoodName() -> String {
        var result = ""
        for line in split(separator: "\n", omittingEmptySubsequences: false) {
            result += (line.hasPrefix("metadata:") ? "metadata: {name: good-2, namespace: shop}" : String(line)) + "\n"
        }
        return result
    }
}
