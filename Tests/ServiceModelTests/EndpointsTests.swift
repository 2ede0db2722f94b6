import Testing
@testable import ServiceModel

/// Joining services to EndpointSlices, and deriving endpoints from Pods when there are none.
@Suite struct EndpointsTests {
    static func ip(_ text: String) -> IPAddress { IPAddress(text)! }

    static let web = Service(
        namespace: "shop", name: "web", clusterIPs: [ip("10.96.0.10")],
        ports: [
            ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .name("http-web")),
            ServicePort(name: "dns", protocol: .udp, port: 53, targetPort: .number(5353)),
        ],
        selector: ["app": "web"])

    static let httpKey = ServicePortName(namespace: "shop", name: "web", port: "http", protocol: .tcp)
    static let dnsKey = ServicePortName(namespace: "shop", name: "web", port: "dns", protocol: .udp)

    // MARK: EndpointSlices

    @Test func slicesAreJoinedByNamespaceNameAndPort() {
        let state = ClusterState(endpointSlices: [
            EndpointSlice(
                namespace: "shop", name: "web-v4", serviceName: "web", addressType: .ipv4,
                endpoints: [
                    Endpoint(addresses: [Self.ip("10.244.2.7")], nodeName: "node-b", zone: "z2", hintZones: ["z2"]),
                    Endpoint(addresses: [Self.ip("10.244.1.5"), Self.ip("10.244.1.6")], nodeName: "node-a"),
                ],
                ports: [
                    EndpointPort(name: "http", protocol: .tcp, port: 8080),
                    EndpointPort(name: "dns", protocol: .udp, port: 5353),
                    EndpointPort(name: "dns", protocol: .tcp, port: 5353),
                ]),
            EndpointSlice(
                namespace: "shop", name: "web-v6", serviceName: "web", addressType: .ipv6,
                endpoints: [Endpoint(addresses: [Self.ip("fd00::5")], hintNodes: ["node-a"])],
                ports: [EndpointPort(name: "http", protocol: .tcp, port: 8081)]),
            // Same service name in another namespace, and another service here: neither joins.
            EndpointSlice(
                namespace: "other", name: "web-x", serviceName: "web", addressType: .ipv4,
                endpoints: [Endpoint(addresses: [Self.ip("10.1.1.1")])],
                ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)]),
            EndpointSlice(
                namespace: "shop", name: "api-x", serviceName: "api", addressType: .ipv4,
                endpoints: [Endpoint(addresses: [Self.ip("10.2.2.2")])],
                ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)]),
        ])
        let (ports, problems) = state.backends(for: Self.web)
        #expect(ports[Self.httpKey] == [
            Backend(address: Self.ip("10.244.1.5"), port: 8080, nodeName: "node-a"),
            Backend(address: Self.ip("10.244.2.7"), port: 8080, nodeName: "node-b", zone: "z2", hintZones: ["z2"]),
            Backend(address: Self.ip("fd00::5"), port: 8081, hintNodes: ["node-a"]),
        ])
        #expect(ports[Self.dnsKey] == [
            Backend(address: Self.ip("10.244.1.5"), port: 5353, nodeName: "node-a"),
            Backend(address: Self.ip("10.244.2.7"), port: 5353, nodeName: "node-b", zone: "z2", hintZones: ["z2"]),
        ])
        #expect(ports.count == 2)
        // The TCP "dns" slice port has no service port: reported, not silently lost.
        #expect(problems == [
            Problem(
                object: ObjectRef(kind: "EndpointSlice", namespace: "shop", name: "web-v4"),
                message: "port \"dns\"/TCP matches no port of Service shop/web, ignored", skipped: false),
        ])
        #expect(EndpointIndex(state).backends(for: Self.web) == (ports, problems))
    }

    @Test func duplicateEndpointsKeepTheNonTerminatingCopy() {
        let terminating = EndpointConditions(ready: false, serving: true, terminating: true)
        let port = [EndpointPort(name: "http", protocol: .tcp, port: 8080)]
        let state = ClusterState(endpointSlices: [
            EndpointSlice(
                namespace: "shop", name: "a", serviceName: "web", addressType: .ipv4,
                endpoints: [
                    Endpoint(addresses: [Self.ip("10.0.0.1")], conditions: terminating, nodeName: "old"),
                    Endpoint(addresses: [Self.ip("10.0.0.2")], nodeName: "first"),
                    Endpoint(addresses: [Self.ip("10.0.0.3")], conditions: terminating, nodeName: "first"),
                ],
                ports: port),
            EndpointSlice(
                namespace: "shop", name: "b", serviceName: "web", addressType: .ipv4,
                endpoints: [
                    Endpoint(addresses: [Self.ip("10.0.0.1")], nodeName: "new"),
                    Endpoint(addresses: [Self.ip("10.0.0.2")], conditions: terminating, nodeName: "second"),
                    Endpoint(addresses: [Self.ip("10.0.0.3")], conditions: terminating, nodeName: "second"),
                ],
                ports: port),
        ])
        let backends = state.backends(for: Self.web).ports[Self.httpKey] ?? []
        #expect(backends.map(\.description) == ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"])
        #expect(backends.map(\.nodeName) == ["new", "first", "first"])
        #expect(backends.map(\.conditions.terminating) == [false, false, true])
    }

    @Test func samePortNameWithDifferentNumbersPerSlice() {
        let state = ClusterState(endpointSlices: [
            EndpointSlice(
                namespace: "shop", name: "a", serviceName: "web", addressType: .ipv4,
                endpoints: [Endpoint(addresses: [Self.ip("10.0.0.1")])],
                ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)]),
            EndpointSlice(
                namespace: "shop", name: "b", serviceName: "web", addressType: .ipv4,
                endpoints: [Endpoint(addresses: [Self.ip("10.0.0.1")])],
                ports: [EndpointPort(name: "http", protocol: .tcp, port: 9090)]),
        ])
        let backends = state.backends(for: Self.web).ports[Self.httpKey] ?? []
        #expect(backends.map(\.description) == ["10.0.0.1:8080", "10.0.0.1:9090"])
    }

    /// A selector service whose controller has published an (empty) slice uses the slice, not Pods.
    @Test func slicesWinOverPods() {
        let state = ClusterState(
            endpointSlices: [EndpointSlice(namespace: "shop", name: "a", serviceName: "web", addressType: .ipv4, endpoints: [], ports: [])],
            pods: [Pod(namespace: "shop", name: "web-0", labels: ["app": "web"], podIPs: [Self.ip("10.244.0.1")],
                       containerPorts: [ContainerPort(name: "http-web", protocol: .tcp, containerPort: 8080)])])
        let (ports, _) = state.backends(for: Self.web)
        #expect(ports == [Self.httpKey: [], Self.dnsKey: []])
    }

    @Test func noSelectorAndNoSlicesGivesEmptyPorts() {
        var service = Self.web
        service.selector = nil
        let state = ClusterState(pods: [Pod(namespace: "shop", name: "web-0", labels: ["app": "web"], podIPs: [Self.ip("10.244.0.1")])])
        #expect(state.backends(for: service).ports == [Self.httpKey: [], Self.dnsKey: []])
        service.selector = [:]
        #expect(state.backends(for: service).ports == [Self.httpKey: [], Self.dnsKey: []])
    }

    // MARK: Pods

    static let pods: [Pod] = {
        let http = ContainerPort(name: "http-web", protocol: .tcp, containerPort: 8080)
        return [
            Pod(namespace: "shop", name: "ready", labels: ["app": "web", "tier": "front"],
                podIPs: [ip("10.244.1.5"), ip("fd00:244::5")], nodeName: "node-a", containerPorts: [http]),
            Pod(namespace: "shop", name: "starting", labels: ["app": "web"], podIPs: [ip("10.244.2.6")],
                nodeName: "node-b", ready: false, containerPorts: [http]),
            Pod(namespace: "shop", name: "stopping", labels: ["app": "web"], podIPs: [ip("10.244.2.7")],
                nodeName: "node-unknown", terminating: true, containerPorts: [http]),
            // Named port missing, or with another protocol: not an endpoint of "http", still of "dns".
            Pod(namespace: "shop", name: "no-named-port", labels: ["app": "web"], podIPs: [ip("10.244.3.1")],
                containerPorts: [ContainerPort(name: "http-web", protocol: .udp, containerPort: 8080)]),
            Pod(namespace: "shop", name: "done", labels: ["app": "web"], podIPs: [ip("10.244.3.2")], finished: true,
                containerPorts: [http]),
            Pod(namespace: "shop", name: "no-ip", labels: ["app": "web"], containerPorts: [http]),
            Pod(namespace: "shop", name: "other-app", labels: ["app": "api"], podIPs: [ip("10.244.3.3")], containerPorts: [http]),
            Pod(namespace: "other", name: "other-ns", labels: ["app": "web"], podIPs: [ip("10.244.3.4")], containerPorts: [http]),
        ]
    }()

    static let nodes = [
        Node(name: "node-a", labels: ["topology.kubernetes.io/zone": "zone-a"]),
        Node(name: "node-b"),
    ]

    @Test func podsStandInForMissingSlices() {
        let state = ClusterState(pods: Self.pods, nodes: Self.nodes)
        let (ports, problems) = state.backends(for: Self.web)
        #expect(problems.isEmpty)
        let notReady = EndpointConditions(ready: false, serving: false, terminating: false)
        let terminating = EndpointConditions(ready: false, serving: true, terminating: true)
        #expect(ports[Self.httpKey] == [
            Backend(address: Self.ip("10.244.1.5"), port: 8080, nodeName: "node-a", zone: "zone-a"),
            Backend(address: Self.ip("10.244.2.6"), port: 8080, conditions: notReady, nodeName: "node-b"),
            Backend(address: Self.ip("10.244.2.7"), port: 8080, conditions: terminating, nodeName: "node-unknown"),
            Backend(address: Self.ip("fd00:244::5"), port: 8080, nodeName: "node-a", zone: "zone-a"),
        ])
        #expect(ports[Self.dnsKey]?.map(\.description) == [
            "10.244.1.5:5353", "10.244.2.6:5353", "10.244.2.7:5353", "10.244.3.1:5353", "[fd00:244::5]:5353",
        ])
        #expect(EndpointIndex(state).backends(for: Self.web) == (ports, problems))
    }

    @Test func selectorNeedsEveryPair() {
        var service = Self.web
        service.selector = ["app": "web", "tier": "front"]
        let state = ClusterState(pods: Self.pods)
        #expect(state.backends(for: service).ports[Self.dnsKey]?.map(\.description) == ["10.244.1.5:5353", "[fd00:244::5]:5353"])
    }

    @Test func nodeNamed() {
        let state = ClusterState(nodes: Self.nodes)
        #expect(state.nodeNamed("node-b") == Self.nodes[1])
        #expect(state.nodeNamed("node-c") == nil)
    }

    /// kubectl prints an unnamed port as `name: ""`; such a slice is valid and serves the unnamed service port.
    @Test func unnamedSlicePortAsKubectlPrintsIt() throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{name: "", port: 80, targetPort: 8080}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-x, namespace: shop, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            endpoints: [{addresses: [10.244.1.9]}]
            ports: [{name: "", port: 8080, protocol: TCP}]
            """, source: "unnamed.yaml")
        #expect(state.problems.isEmpty, "\(state.problems)")
        let service = try #require(state.services.first)
        let key = ServicePortName(namespace: "shop", name: "web", port: "", protocol: .tcp)
        #expect(state.backends(for: service).ports[key]?.map(\.description) == ["10.244.1.9:8080"])
    }

    /// A Service whose only EndpointSlice is invalid gets no endpoints, not endpoints from Pods
    /// the slice never listed.
    @Test func anInvalidSliceStillStopsThePodFallback() throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-x, namespace: shop, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            endpoints: [{addresses: [10.244.1.300]}]
            ports: [{port: 8080}]
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: web-0, namespace: shop, labels: {app: web}}
            status: {podIP: 10.244.0.11, conditions: [{type: Ready, status: "True"}]}
            """, source: "bad-slice.yaml")
        #expect(state.endpointSlices.isEmpty)
        #expect(state.problems.contains { $0.object?.kind == "EndpointSlice" && $0.skipped })
        let service = try #require(state.services.first)
        let key = ServicePortName(namespace: "shop", name: "web", port: "", protocol: .tcp)
        #expect(state.backends(for: service).ports[key] == [])
        #expect(EndpointIndex(state).backends(for: service).ports[key] == [])
    }

    /// The whole path: STATE text with plain Pods, decoded, then joined.
    @Test func decodedPodsGiveBackends() throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: web-0, namespace: shop, labels: {app: web}}
            status: {podIP: 10.244.0.11, conditions: [{type: Ready, status: "True"}]}
            """, source: "hand.yaml")
        let service = try #require(state.services.first)
        let key = ServicePortName(namespace: "shop", name: "web", port: "", protocol: .tcp)
        #expect(state.backends(for: service).ports == [key: [Backend(address: Self.ip("10.244.0.11"), port: 8080)]])
    }
}
