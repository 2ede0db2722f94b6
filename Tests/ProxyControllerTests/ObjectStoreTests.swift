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
