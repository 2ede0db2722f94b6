import ProxyController
import ServiceModel
import Testing

@Suite struct ObjectStoreTests {
    private static let text = """
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
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: api-x, namespace: shop, labels: {kubernetes.io/service-name: api}}
        addressType: IPv4
        endpoints: [{addresses: [10.244.1.7]}]
        ports: [{port: 8080}]
        """

    /// The Services named by slices, valid or not, are remembered, so an invalid slice never lets
    /// its Service fall back to endpoints from Pods.
    @Test func sliceOwnersSurviveInvalidSlices() {
        var store = ObjectStore()
        store.replace(ObjectStore.Kind.allCases, with: StateDecoder.decode(Self.text, source: "t.yaml"))
        #expect(store.state.servicesWithSlices == ["shop/web", "shop/api"])
        #expect(store.state.endpointSlices.map(\.name) == ["api-x"])
        store.remove(ObjectRef(kind: "EndpointSlice", namespace: "shop", name: "api-x"))
        #expect(store.state.servicesWithSlices == ["shop/web"])
    }

    @Test func aBrokenUpdateReplacesTheGoodCopy() {
        var store = ObjectStore()
        store.upsert(StateDecoder.decode("""
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
            """, source: "a"))
        #expect(store.serviceCount == 1)
        store.upsert(StateDecoder.decode("""
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec: {clusterIP: 10.96.0.10, ports: [{port: 70000}]}
            """, source: "b"))
        #expect(store.serviceCount == 0)
        #expect(store.state.problems.contains { $0.object?.name == "web" && $0.skipped })
    }
}

/// A sync recompiles only the services a change can reach, so the store must name them all.
@Suite struct ObjectStoreChangeTests {
    private static func decode(_ text: String) -> ClusterState { StateDecoder.decode(text, source: "t.yaml") }

    private static func service(_ name: String, ip: String) -> String {
        """
        apiVersion: v1
        kind: Service
        metadata: {name: \(name), namespace: shop}
        spec: {clusterIP: \(ip), selector: {app: \(name)}, ports: [{port: 80, targetPort: 8080}]}
        """
    }

    private static func slice(_ name: String, for service: String, address: String) -> String {
        """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: \(name), namespace: shop, labels: {kubernetes.io/service-name: \(service)}}
        addressType: IPv4
        endpoints: [{addresses: [\(address)]}]
        ports: [{port: 8080}]
        """
    }

    private static let web = ObjectRef(kind: "Service", namespace: "shop", name: "web")
    private static let api = ObjectRef(kind: "Service", namespace: "shop", name: "api")

    private static func seeded() -> ObjectStore {
        var store = ObjectStore()
        store.replace(ObjectStore.Kind.allCases, with: decode([
            service("web", ip: "10.96.0.10"), service("api", ip: "10.96.0.11"), slice("web-x", for: "web", address: "10.244.1.5"),
        ].joined(separator: "\n---\n")))
        _ = store.takeChanges()
        return store
    }

    @Test func aSliceChangeNamesItsService() {
        var store = Self.seeded()
        store.upsert(Self.decode(Self.slice("web-x", for: "web", address: "10.244.1.6")))
        #expect(store.takeChanges() == ObjectStore.Changes(services: [Self.web]))
        #expect(store.takeChanges().isEmpty, "taking the changes starts afresh")
    }

    @Test func aSliceMovingToAnotherServiceNamesBoth() {
        var store = Self.seeded()
        store.upsert(Self.decode(Self.slice("web-x", for: "api", address: "10.244.1.5")))
        #expect(store.takeChanges().services == [Self.web, Self.api])
        #expect(store.state(for: store.service(Self.web)!).endpointSlices.isEmpty)
        #expect(store.state(for: store.service(Self.api)!).endpointSlices.map(\.name) == ["web-x"])
    }

    @Test func anIdenticalRelistRecordsNothing() {
        var store = Self.seeded()
        store.replace(ObjectStore.Kind.allCases, with: Self.decode([
            Self.service("web", ip: "10.96.0.10"), Self.service("api", ip: "10.96.0.11"), Self.slice("web-x", for: "web", address: "10.244.1.5"),
        ].joined(separator: "\n---\n")))
        #expect(store.takeChanges().isEmpty)
    }

    @Test func aRelistWithoutAServiceRemovesIt() {
        var store = Self.seeded()
        store.replace([.service], with: Self.decode(Self.service("web", ip: "10.96.0.10")))
        #expect(store.takeChanges() == ObjectStore.Changes(services: [Self.api]))
        #expect(store.service(Self.api) == nil)
    }

    @Test func podsNameTheirNamespaceAndNodesEverything() {
        var store = Self.seeded()
        store.upsert(Self.decode("""
            apiVersion: v1
            kind: Pod
            metadata: {name: api-1, namespace: shop, labels: {app: api}}
            spec: {nodeName: node-a}
            status: {phase: Running, podIPs: [{ip: 10.244.1.9}], conditions: [{type: Ready, status: "True"}]}
            """))
        #expect(store.takeChanges() == ObjectStore.Changes(podNamespaces: ["shop"]))
        // api has no slice: its endpoints come from the namespace's pods.
        #expect(store.state(for: store.service(Self.api)!).pods.map(\.name) == ["api-1"])
        store.upsert(Self.decode("""
            apiVersion: v1
            kind: Node
            metadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}
            """))
        #expect(store.takeChanges().everything)
    }
}
