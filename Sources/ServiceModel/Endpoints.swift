/// Joining Services to their endpoints: EndpointSlices when there are any, else the Pods the
/// selector matches (so a hand-written state can list plain Pods).

extension ClusterState {
    /// The backends of each port of `service`, both families, each list sorted.
    ///
    /// Scans the whole state; to look up every service, build an `EndpointIndex` once instead.
    public func backends(for service: Service) -> (ports: [ServicePortName: [Backend]], problems: [Problem]) {
        let slices = endpointSlices.filter { $0.namespace == service.namespace && $0.serviceName == service.name }
        let fromPods = slices.isEmpty && !servicesWithSlices.contains("\(service.namespace)/\(service.name)")
        let sources = EndpointSources(
            slices: slices,
            pods: fromPods ? pods.filter { $0.namespace == service.namespace } : [],
            zoneOfNode: { nodeNamed($0)?.zone })
        return sources.backends(for: service)
    }

    /// The Node object called `name`, if the state has one.
    public func nodeNamed(_ name: String) -> Node? {
        nodes.first { $0.name == name }
    }
}

/// EndpointSlices, Pods and Nodes grouped once, so that finding the backends of every service in
/// a large state costs O(objects), not O(services × objects).
public struct EndpointIndex: Sendable {
    private let slicesByService: [ServiceKey: [EndpointSlice]]
    private let podsByNamespace: [String: [Pod]]
    private let zonesByNode: [String: String]
    private let servicesWithSlices: Set<String>

    public init(_ state: ClusterState) {
        slicesByService = Dictionary(grouping: state.endpointSlices) {
            ServiceKey(namespace: $0.namespace, name: $0.serviceName)
        }
        podsByNamespace = Dictionary(grouping: state.pods, by: \.namespace)
        servicesWithSlices = state.servicesWithSlices
        var zones: [String: String] = [:]
        for node in state.nodes where zones[node.name] == nil {
            zones[node.name] = node.zone
        }
        zonesByNode = zones
    }

    /// The same answer as `ClusterState.backends(for:)`.
    public func backends(for service: Service) -> (ports: [ServicePortName: [Backend]], problems: [Problem]) {
        let slices = slicesByService[ServiceKey(namespace: service.namespace, name: service.name)] ?? []
        let fromPods = slices.isEmpty && !servicesWithSlices.contains("\(service.namespace)/\(service.name)")
        let sources = EndpointSources(
            slices: slices,
            pods: fromPods ? podsByNamespace[service.namespace] ?? [] : [],
            zoneOfNode: { zonesByNode[$0] })
        return sources.backends(for: service)
    }

    private struct ServiceKey: Hashable, Sendable {
        var namespace: String
        var name: String
    }
}

extension Node {
    /// The `topology.kubernetes.io/zone` label, which topology-aware routing compares hints against.
    public var zone: String? { labels["topology.kubernetes.io/zone"] }
}

/// The candidate objects for one service: its slices, or (when it has none) its namespace's pods.
private struct EndpointSources {
    var slices: [EndpointSlice]
    var pods: [Pod]
    var zoneOfNode: (String) -> String?

    func backends(for service: Service) -> (ports: [ServicePortName: [Backend]], problems: [Problem]) {
        var result: [ServicePortName: [Backend]] = [:]
        let problems = slices.isEmpty ? [] : unmatchedSlicePorts(of: service)
        for port in service.ports {
            let key = ServicePortName(namespace: service.namespace, name: service.name, port: port.name, protocol: port.protocol)
            let backends = slices.isEmpty ? podBackends(for: port, selector: service.selector ?? [:]) : sliceBackends(for: port)
            result[key] = deduplicated(backends)
        }
        return (result, problems)
    }

    /// Every endpoint of every slice port with the service port's name and protocol. Slices are
    /// visited by name so that which duplicate survives does not depend on input order.
    private func sliceBackends(for servicePort: ServicePort) -> [Backend] {
        var backends: [Backend] = []
        for slice in byName(slices) {
            guard let port = slice.ports.first(where: { $0.name == servicePort.name && $0.protocol == servicePort.protocol }) else {
                continue
            }
            for endpoint in slice.endpoints {
                guard let address = endpoint.addresses.first else { continue }
                backends.append(Backend(
                    address: address, port: port.port, conditions: endpoint.conditions, nodeName: endpoint.nodeName,
                    zone: endpoint.zone, hintZones: endpoint.hintZones, hintNodes: endpoint.hintNodes))
            }
        }
        return backends
    }

    /// What the EndpointSlice controller would publish for the pods the selector matches. An empty
    /// selector selects nothing: such a service's endpoints are managed by hand.
    private func podBackends(for servicePort: ServicePort, selector: [String: String]) -> [Backend] {
        guard !selector.isEmpty else { return [] }
        var backends: [Backend] = []
        for pod in pods.sorted(by: { $0.name < $1.name })
        where !pod.finished && selector.allSatisfy({ pod.labels[$0.key] == $0.value }) {
            let port: UInt16
            switch servicePort.targetPort {
            case .number(let number):
                port = number
            case .name(let name):
                // A pod without that named port is simply not an endpoint of this service port.
                guard let match = pod.containerPorts.first(where: { $0.name == name && $0.protocol == servicePort.protocol }) else {
                    continue
                }
                port = match.containerPort
            }
            let conditions = EndpointConditions(ready: pod.ready && !pod.terminating, serving: pod.ready, terminating: pod.terminating)
            for address in pod.podIPs {
                backends.append(Backend(
                    address: address, port: port, conditions: conditions, nodeName: pod.nodeName,
                    zone: pod.nodeName.flatMap(zoneOfNode)))
            }
        }
        return backends
    }

    /// One backend per address and port, sorted. The same endpoint can sit in two slices while it
    /// moves between them, and a pod IP can be reused: a non-terminating copy wins, as in kube-proxy.
    private func deduplicated(_ backends: [Backend]) -> [Backend] {
        // As a slice lists them, as a rule: then there is nothing to do.
        if backends.isSorted(strictly: true) { return backends }
        var kept: [Backend] = []
        kept.reserveCapacity(backends.count)
        // A port has a handful of endpoints as a rule: those are compared in place, not hashed.
        let hashed = backends.count > 32
        var indexByTarget: [BackendTarget: Int] = [:]
        for backend in backends {
            let target = BackendTarget(address: backend.address, port: backend.port)
            let found = hashed ? indexByTarget[target] : kept.firstIndex { $0.address == backend.address && $0.port == backend.port }
            if let index = found {
                if kept[index].conditions.terminating && !backend.conditions.terminating { kept[index] = backend }
            } else {
                if hashed { indexByTarget[target] = kept.count }
                kept.append(backend)
            }
        }
        return kept.sorted()
    }

    /// Slice ports that match no service port get no traffic; saying so explains a port that rejects.
    private func unmatchedSlicePorts(of service: Service) -> [Problem] {
        var problems: [Problem] = []
        for slice in byName(slices) {
            for port in slice.ports
            where !service.ports.contains(where: { $0.name == port.name && $0.protocol == port.protocol }) {
                let name = port.name.isEmpty ? "unnamed port" : "port \"\(port.name)\""
                problems.append(Problem(
                    object: slice.ref,
                    message: "\(name)/\(port.protocol.rawValue) matches no port of \(service.ref), ignored",
                    skipped: false))
            }
        }
        return problems
    }

    /// The slices in name order; a service's only slice as it is.
    private func byName(_ slices: [EndpointSlice]) -> [EndpointSlice] {
        slices.count < 2 ? slices : slices.sorted { $0.name < $1.name }
    }

    private struct BackendTarget: Hashable {
        var address: IPAddress
        var port: UInt16
    }
}
