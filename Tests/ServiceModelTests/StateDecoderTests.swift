import Testing
@testable import ServiceModel

/// Decoding each kind from YAML and JSON, lists, multi-document text and notes.
@Suite struct StateDecoderTests {
    static let serviceYAML = """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop
          labels: {app: web, version: 1.0}
        spec:
          type: LoadBalancer
          clusterIP: 172.30.0.041
          clusterIPs: [172.30.0.041, "fd00::0010"]
          ipFamilies: [IPv4, IPv6]
          ports:
          - name: http
            port: 80
            targetPort: http-web
            nodePort: 30080
          - name: dns
            protocol: UDP
            port: 53
          - name: sctp
            protocol: SCTP
            port: 9000
            targetPort: 9001
          selector: {app: web}
          externalIPs: [203.0.113.7]
          loadBalancerSourceRanges: [" 198.51.100.0/24", "2001:db8::/32 "]
          sessionAffinity: ClientIP
          sessionAffinityConfig: {clientIP: {timeoutSeconds: 300}}
          externalTrafficPolicy: Local
          internalTrafficPolicy: Cluster
          healthCheckNodePort: 31000
        status:
          loadBalancer:
            ingress:
            - ip: 192.0.2.10
              ipMode: Proxy
            - hostname: lb.example.com
            - ip: 192.0.2.11
        """

    @Test func serviceFromYAML() throws {
        let state = StateDecoder.decode(Self.serviceYAML, source: "svc.yaml")
        #expect(state.problems == [])
        let service = try #require(state.services.first)
        #expect(state.services.count == 1)
        #expect(service.namespace == "shop")
        #expect(service.name == "web")
        #expect(service.labels == ["app": "web", "version": "1.0"])
        #expect(service.type == .loadBalancer)
        // Leading zeros are read as decimal and written canonically, IPv6 compressed.
        #expect(service.clusterIPs.map(\.description) == ["172.30.0.41", "fd00::10"])
        #expect(service.isHeadless == false)
        #expect(service.ipFamilies == [.ipv4, .ipv6])
        #expect(service.ports == [
            ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .name("http-web"), nodePort: 30080),
            ServicePort(name: "dns", protocol: .udp, port: 53, targetPort: .number(53)),
            ServicePort(name: "sctp", protocol: .sctp, port: 9000, targetPort: .number(9001)),
        ])
        #expect(service.selector == ["app": "web"])
        #expect(service.externalIPs.map(\.description) == ["203.0.113.7"])
        #expect(service.loadBalancerSourceRanges.map(\.description) == ["198.51.100.0/24", "2001:db8::/32"])
        #expect(service.sessionAffinity == .clientIP(timeoutSeconds: 300))
        #expect(service.externalTrafficPolicy == .local)
        #expect(service.internalTrafficPolicy == .cluster)
        #expect(service.healthCheckNodePort == 31000)
        #expect(service.loadBalancerIngress == [
            LoadBalancerIngress(ip: IPAddress("192.0.2.10")!, ipMode: .proxy),
            LoadBalancerIngress(ip: IPAddress("192.0.2.11")!, ipMode: nil),
        ])
    }

    @Test func serviceDefaults() throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Service
            metadata: {name: plain}
            spec:
              clusterIP: 10.96.0.10
              ports: [{port: 8080}]
              sessionAffinity: ClientIP
            """, source: "s")
        let service = try #require(state.services.first)
        #expect(service.namespace == "default")
        #expect(service.type == .clusterIP)
        #expect(service.clusterIPs == [IPAddress("10.96.0.10")!])
        #expect(service.ports == [ServicePort(name: "", protocol: .tcp, port: 8080, targetPort: .number(8080))])
        #expect(service.selector == nil)
        #expect(service.sessionAffinity == .clientIP(timeoutSeconds: 10800))
        #expect(service.externalTrafficPolicy == .cluster)
        #expect(service.internalTrafficPolicy == .cluster)
        #expect(service.healthCheckNodePort == 0)
        #expect(service.externalName == nil)
    }

    @Test(arguments: [
        ("None", true, [String]()),
        ("\"\"", false, []),
    ])
    func headlessAndUnsetClusterIP(clusterIP: String, headless: Bool, addresses: [String]) throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Service
            metadata: {name: db}
            spec: {clusterIP: \(clusterIP), ports: [{port: 5432}]}
            """, source: "s")
        let service = try #require(state.services.first)
        #expect(service.isHeadless == headless)
        #expect(service.clusterIPs.map(\.description) == addresses)
    }

    @Test func externalNameService() throws {
        let state = StateDecoder.decode("""
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
             "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
            """, source: "s")
        let service = try #require(state.services.first)
        #expect(service.type == .externalName)
        #expect(service.externalName == "db.example.com")
        #expect(service.ports.isEmpty)
    }

    static let sliceYAML = """
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web-abc12
          namespace: shop
          labels: {kubernetes.io/service-name: web}
        addressType: IPv6
        endpoints:
        - addresses: ["fd00::1", "fd00::9"]
          nodeName: node-a
          zone: zone-1
          hints:
            forZones: [{name: zone-1}, {name: zone-2}]
            forNodes: [{name: node-a}]
        - addresses: ["fd00::2"]
          conditions: {ready: false, serving: true, terminating: true}
        - addresses: []
        ports:
        - name: http
          port: 8080
        - name: dns
          protocol: UDP
          port: 5353
        """

    @Test func endpointSliceFromYAML() throws {
        let state = StateDecoder.decode(Self.sliceYAML, source: "slice.yaml")
        #expect(state.problems == [])
        let slice = try #require(state.endpointSlices.first)
        #expect(slice.namespace == "shop")
        #expect(slice.name == "web-abc12")
        #expect(slice.serviceName == "web")
        #expect(slice.addressType == .ipv6)
        #expect(slice.endpoints == [
            Endpoint(
                addresses: [IPAddress("fd00::1")!, IPAddress("fd00::9")!], conditions: EndpointConditions(),
                nodeName: "node-a", zone: "zone-1", hintZones: ["zone-1", "zone-2"], hintNodes: ["node-a"]),
            Endpoint(
                addresses: [IPAddress("fd00::2")!],
                conditions: EndpointConditions(ready: false, serving: true, terminating: true)),
        ])
        #expect(slice.ports == [
            EndpointPort(name: "http", protocol: .tcp, port: 8080),
            EndpointPort(name: "dns", protocol: .udp, port: 5353),
        ])
    }

    @Test func podFromYAML() throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Pod
            metadata:
              name: web-0
              namespace: shop
              labels: {app: web}
              deletionTimestamp: "2024-05-01T10:00:00Z"
            spec:
              nodeName: node-a
              containers:
              - name: main
                ports:
                - {name: http-web, containerPort: 8080}
                - {containerPort: 5353, protocol: UDP}
              - name: sidecar
                ports: [{name: metrics, containerPort: 9090}]
            status:
              phase: Running
              podIP: 10.244.1.5
              podIPs: [{ip: 10.244.1.5}, {ip: "fd00:244::5"}]
              conditions:
              - {type: PodScheduled, status: "True"}
              - {type: Ready, status: "True"}
            """, source: "pod.yaml")
        #expect(state.problems == [])
        let pod = try #require(state.pods.first)
        #expect(pod.namespace == "shop")
        #expect(pod.name == "web-0")
        #expect(pod.labels == ["app": "web"])
        #expect(pod.podIPs.map(\.description) == ["10.244.1.5", "fd00:244::5"])
        #expect(pod.nodeName == "node-a")
        #expect(pod.ready)
        #expect(pod.terminating)
        #expect(pod.finished == false)
        #expect(pod.containerPorts == [
            ContainerPort(name: "http-web", protocol: .tcp, containerPort: 8080),
            ContainerPort(name: "", protocol: .udp, containerPort: 5353),
            ContainerPort(name: "metrics", protocol: .tcp, containerPort: 9090),
        ])
    }

    @Test(arguments: [
        ("Succeeded", "True", true, true),
        ("Failed", "False", true, false),
        ("Pending", "False", false, false),
    ])
    func podPhaseAndReadiness(phase: String, readyStatus: String, finished: Bool, ready: Bool) throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Pod
            metadata: {name: job}
            status:
              phase: \(phase)
              podIP: 10.244.0.9
              conditions: [{type: Ready, status: "\(readyStatus)"}]
            """, source: "p")
        let pod = try #require(state.pods.first)
        #expect(pod.finished == finished)
        #expect(pod.ready == ready)
        #expect(pod.terminating == false)
        #expect(pod.podIPs == [IPAddress("10.244.0.9")!])
    }

    @Test func nodeFromYAML() throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Node
            metadata:
              name: node-a
              labels: {topology.kubernetes.io/zone: zone-1}
            spec:
              podCIDR: 10.244.1.0/24
              podCIDRs: [10.244.1.0/24, "fd00:244:1::/64"]
            status:
              addresses:
              - {type: Hostname, address: node-a}
              - {type: InternalIP, address: 192.168.1.10}
              - {type: InternalDNS, address: node-a.internal}
              - {type: ExternalIP, address: "2001:db8::10"}
            """, source: "node.yaml")
        #expect(state.problems == [])
        let node = try #require(state.nodes.first)
        #expect(node.name == "node-a")
        #expect(node.zone == "zone-1")
        #expect(node.addresses == [
            NodeAddress(type: "InternalIP", address: IPAddress("192.168.1.10")!),
            NodeAddress(type: "ExternalIP", address: IPAddress("2001:db8::10")!),
        ])
        #expect(node.podCIDRs.map(\.description) == ["10.244.1.0/24", "fd00:244:1::/64"])
        #expect(node.primaryIP(.ipv4) == IPAddress("192.168.1.10"))
    }

    @Test func serviceCIDRFromYAML() throws {
        let state = StateDecoder.decode("""
            apiVersion: networking.k8s.io/v1
            kind: ServiceCIDR
            metadata: {name: kubernetes}
            spec: {cidrs: [10.96.0.0/12, "fd00:10:96::/112"]}
            """, source: "cidr.yaml")
        #expect(state.problems == [])
        #expect(state.serviceCIDRs == [
            ServiceCIDR(name: "kubernetes", cidrs: [CIDR("10.96.0.0/12")!, CIDR("fd00:10:96::/112")!]),
        ])
    }

    /// What `kubectl get … -o json` prints: one `kind: List` of mixed kinds.
    @Test func kubectlJSONList() throws {
        let json = """
            {
                "apiVersion": "v1",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                        "spec": {
                            "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ipFamilies": ["IPv4"],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                            "selector": {"app": "web"}, "sessionAffinity": "None", "type": "ClusterIP"
                        },
                        "status": {"loadBalancer": {}}
                    },
                    {
                        "addressType": "IPv4",
                        "apiVersion": "discovery.k8s.io/v1",
                        "endpoints": [
                            {"addresses": ["10.244.1.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
                             "nodeName": "node-a", "zone": "zone-1"}
                        ],
                        "kind": "EndpointSlice",
                        "metadata": {"name": "web-x7k2p", "namespace": "shop",
                                     "labels": {"kubernetes.io/service-name": "web"}},
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
                    },
                    {
                        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
                        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}
                    },
                    {
                        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "shop"},
                        "status": {"podIP": "10.244.1.5"}
                    },
                    {
                        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "kubernetes"},
                        "spec": {"cidrs": ["10.96.0.0/12"]}
                    }
                ],
                "kind": "List",
                "metadata": {"resourceVersion": ""}
            }
            """
        let state = StateDecoder.decode(json, source: "state.json")
        #expect(state.problems == [])
        #expect(state.services.map(\.ref.description) == ["Service shop/web"])
        #expect(state.services.first?.ports.first?.targetPort == .number(8080))
        #expect(state.endpointSlices.map(\.ref.description) == ["EndpointSlice shop/web-x7k2p"])
        #expect(state.endpointSlices.first?.endpoints.first?.conditions == EndpointConditions())
        #expect(state.nodes.map(\.name) == ["node-a"])
        #expect(state.pods.map(\.name) == ["web-1"])
        #expect(state.serviceCIDRs.map(\.name) == ["kubernetes"])
    }

    /// API-server lists (`ServiceList`) leave kind and apiVersion out of each item.
    @Test func typedListItemsInheritKind() throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: ServiceList
            items:
            - metadata: {name: a}
              spec: {clusterIP: 10.96.0.1, ports: [{port: 443}]}
            - metadata: {name: b}
              spec: {clusterIP: 10.96.0.300, ports: [{port: 443}]}
            """, source: "list.yaml")
        #expect(state.services.map(\.name) == ["a"])
        #expect(state.problems == [
            Problem(
                object: ObjectRef(kind: "Service", namespace: "default", name: "b"),
                source: "list.yaml, document 1, items[1]", field: "spec.clusterIP",
                message: "\"10.96.0.300\" is not an IP address"),
        ])
    }

    /// A list long enough to be decoded in two halves at once comes out as if read in one pass:
    /// objects and problems in item order, each problem naming its item.
    @Test func longListKeepsItemOrder() throws {
        let count = StateDecoder.parallelItems + 501
        let bad: Set<Int> = [3, count / 2 - 1, count / 2, count - 2]
        let items = (0..<count).map { index in
            let address = bad.contains(index) ? "10.96.0.300" : "10.96.\(index / 250).\(index % 250)"
            let kind = index % 3 == 0 ? #""kind":"Service","apiVersion":"v1","# : ""
            return #"{\#(kind)"metadata":{"name":"s\#(index)"},"spec":{"clusterIP":"\#(address)","ports":[{"port":80}]}}"#
        }
        let state = StateDecoder.decode(#"{"apiVersion":"v1","kind":"ServiceList","items":["# + items.joined(separator: ",") + "]}",
                                        source: "long.json")
        #expect(state.services.map(\.name) == (0..<count).filter { !bad.contains($0) }.map { "s\($0)" })
        #expect(state.problems.map(\.source) == bad.sorted().map { "long.json, document 1, items[\($0)]" })
        #expect(state.problems.map(\.object?.name) == bad.sorted().map { "s\($0)" })
    }

    @Test func multiDocumentYAML() throws {
        let text = "---\n" + Self.serviceYAML + "\n---\n# a comment only\n---\n" + Self.sliceYAML + "\n...\n---\n"
        let state = StateDecoder.decode(text, source: "multi.yaml")
        #expect(state.problems == [])
        #expect(state.services.map(\.name) == ["web"])
        #expect(state.endpointSlices.map(\.name) == ["web-abc12"])
    }

    @Test func unknownKindsAreNotes() throws {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: settings, namespace: shop}
            ---
            apiVersion: discovery.k8s.io/v1beta1
            kind: EndpointSlice
            metadata: {name: old, namespace: shop, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: web, namespace: shop}
            spec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}
            """, source: "mixed.yaml")
        #expect(state.services.map(\.name) == ["web"])
        #expect(state.endpointSlices.isEmpty)
        #expect(state.problems == [
            Problem(
                object: ObjectRef(kind: "ConfigMap", namespace: "shop", name: "settings"), source: "mixed.yaml, document 1",
                message: "unknown kind ConfigMap (apiVersion v1), ignored", skipped: false),
            Problem(
                object: ObjectRef(kind: "EndpointSlice", namespace: "shop", name: "old"), source: "mixed.yaml, document 2",
                message: "unknown kind EndpointSlice (apiVersion discovery.k8s.io/v1beta1), ignored", skipped: false),
        ])
    }

    @Test func brokenDocumentsDoNotStopTheOthers() throws {
        let text = """
            apiVersion: v1
            kind: Service
            metadata: {name: first}
            spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: broken
            ---
            - just
            - a list
            ---
            plain text
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: last}
            spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
            """
        let state = StateDecoder.decode(text, source: "state.yaml")
        #expect(state.services.map(\.name) == ["first", "last"])
        #expect(state.problems.count == 3)
        let syntax = try #require(state.problems.first)
        #expect(syntax.object == nil)
        #expect(syntax.source == "state.yaml, document 2")
        #expect(syntax.skipped)
        // The line number counts in the whole file, not in the document.
        #expect(syntax.message.hasPrefix("not valid YAML or JSON: line 9,"), "\(syntax.message)")
        #expect(state.problems[1] == Problem(
            object: nil, source: "state.yaml, document 3", message: "expected a Kubernetes object (a mapping), got a list"))
        #expect(state.problems[2] == Problem(
            object: nil, source: "state.yaml, document 4", message: "expected a Kubernetes object (a mapping), got plain text"))
    }

    @Test func windowsLineEndings() throws {
        let text = (Self.serviceYAML + "\n---\n" + Self.sliceYAML).split(separator: "\n").joined(separator: "\r\n")
        let state = StateDecoder.decode(text, source: "crlf.yaml")
        #expect(state.problems == [])
        #expect(state.services.map(\.name) == ["web"])
        #expect(state.endpointSlices.map(\.name) == ["web-abc12"])
    }

    @Test func unknownClusterScopedKindKeepsItsNamespace() {
        let state = StateDecoder.decode("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: admin}", source: "r")
        #expect(state.problems.map(\.description) == [
            "note: ClusterRole admin (r, document 1): unknown kind ClusterRole (apiVersion rbac.authorization.k8s.io/v1), ignored",
        ])
    }

    @Test func emptyInputGivesAnEmptyState() {
        #expect(StateDecoder.decode("", source: "empty") == ClusterState())
        #expect(StateDecoder.decode("---\n# nothing\n---\n", source: "empty") == ClusterState())
    }

    @Test func fqdnSliceIsANote() throws {
        let state = StateDecoder.decode("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: ext-1, labels: {kubernetes.io/service-name: ext}}
            addressType: FQDN
            endpoints: [{addresses: [db.example.com]}]
            """, source: "s")
        #expect(state.endpointSlices.isEmpty)
        #expect(state.problems == [
            Problem(
                object: ObjectRef(kind: "EndpointSlice", namespace: "default", name: "ext-1"), source: "s, document 1",
                field: "addressType", message: "FQDN slices carry no addresses a proxy can use, ignored", skipped: false),
        ])
    }

    @Test func slicePortWithoutNumberIsDroppedWithANote() throws {
        let state = StateDecoder.decode("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
            addressType: IPv4
            endpoints: [{addresses: [10.0.0.1]}]
            ports: [{name: a}, {name: b, port: 0}, {name: c, port: 81}]
            """, source: "s")
        let slice = try #require(state.endpointSlices.first)
        #expect(slice.ports == [EndpointPort(name: "c", protocol: .tcp, port: 81)])
        #expect(state.problems.map(\.field) == ["ports[0].port", "ports[1].port"])
        #expect(state.problems.allSatisfy { !$0.skipped && $0.object?.name == "web-1" })
    }

    @Test func problemDescriptionNamesObjectSourceAndField() {
        let state = StateDecoder.decode("""
            apiVersion: v1
            kind: Service
            metadata: {name: web}
            spec:
              ports:
              - {name: a, port: 80}
              - {name: b, port: 70000}
            """, source: "state.yaml")
        #expect(state.problems.map(\.description) == [
            "skipped Service default/web (state.yaml, document 1): spec.ports[1].port: 70000 is out of range 1-65535",
        ])
    }
}
