import ServiceModel

/// The cluster objects the agent currently knows, keyed by kind, namespace and name, so watch
/// events can add, replace and delete single objects, and a re-list can replace a whole kind.
///
/// Every change also records which services it can affect (`changes`), so a sync recompiles
/// those services only: a slice names its service, a pod its namespace; a Node or ServiceCIDR
/// change reaches every service.
public struct ObjectStore: Sendable, Equatable {
    /// What changed since the controller last took the changes.
    public struct Changes: Sendable, Equatable {
        /// Services (kind `Service`) whose object, slices or slice ownership changed.
        public var services: Set<ObjectRef> = []
        /// Namespaces whose pods changed: their services without slices take endpoints from pods.
        public var podNamespaces: Set<String> = []
        /// A Node or ServiceCIDR changed: node facts, zones and ClusterIP ranges may differ for all.
        public var everything = false

        public var isEmpty: Bool { services.isEmpty && podNamespaces.isEmpty && !everything }

        public init(services: Set<ObjectRef> = [], podNamespaces: Set<String> = [], everything: Bool = false) {
            self.services = services
            self.podNamespaces = podNamespaces
            self.everything = everything
        }
    }

    public private(set) var changes = Changes()
    /// The slices of each service (by the service's ref), for recompiling one service.
    private var slicesByService: [ObjectRef: Set<ObjectRef>] = [:]
    /// How many slices (valid or not) name each `namespace/name`.
    private var ownerCounts: [String: Int] = [:]

    private var services: [ObjectRef: Service] = [:]
    private var slices: [ObjectRef: EndpointSlice] = [:]
    private var pods: [ObjectRef: Pod] = [:]
    private var nodes: [ObjectRef: Node] = [:]
    private var serviceCIDRs: [ObjectRef: ServiceCIDR] = [:]
    /// Problems of the objects as they are now, by object (nil: a document with no usable name).
    private var problems: [ObjectRef?: [Problem]] = [:]
    /// Services named by some EndpointSlice, valid or not, by the slice that names them.
    private var sliceOwners: [ObjectRef: String] = [:]

    public init() {}

    /// The kinds a source can list; a re-list replaces exactly one of these.
    public enum Kind: String, Sendable, CaseIterable {
        case service = "Service"
        case endpointSlice = "EndpointSlice"
        case pod = "Pod"
        case node = "Node"
        case serviceCIDR = "ServiceCIDR"
    }

    /// Replaces every object of `kinds` with those in `decoded` (a re-list, or a re-read of files).
    /// Objects that come back unchanged record no change.
    public mutating func replace(_ kinds: [Kind], with decoded: ClusterState) {
        var kept = Set<ObjectRef>()
        for service in decoded.services { kept.insert(service.ref) }
        for slice in decoded.endpointSlices { kept.insert(slice.ref) }
        for pod in decoded.pods { kept.insert(pod.ref) }
        for node in decoded.nodes { kept.insert(node.ref) }
        for cidr in decoded.serviceCIDRs { kept.insert(ObjectRef(kind: "ServiceCIDR", namespace: "", name: cidr.name)) }
        for kind in kinds {
            for ref in refs(of: kind) where !kept.contains(ref) { remove(ref) }
            problems = problems.filter { $0.key?.kind != kind.rawValue }
        }
        upsert(decoded)
    }

    /// Hands the changes recorded so far to the caller and starts recording afresh.
    public mutating func takeChanges() -> Changes {
        defer { changes = Changes() }
        return changes
    }

    private func refs(of kind: Kind) -> [ObjectRef] {
        switch kind {
        case .service: Array(services.keys)
        case .endpointSlice: Array(Set(slices.keys).union(sliceOwners.keys))
        case .pod: Array(pods.keys)
        case .node: Array(nodes.keys)
        case .serviceCIDR: Array(serviceCIDRs.keys)
        }
    }

    /// Adds or replaces the objects in `decoded`; an object that failed to decode (a Problem
    /// naming it) replaces any earlier good copy, so a broken update never keeps stale rules.
    public mutating func upsert(_ decoded: ClusterState) {
        for problem in decoded.problems where problem.skipped {
            if let ref = problem.object { remove(ref) }
        }
        for problem in decoded.problems { problems[problem.object, default: []].append(problem) }
        for service in decoded.services where services[service.ref] != service {
            set(service.ref) { $0.services[service.ref] = service }
            changes.services.insert(service.ref)
        }
        for slice in decoded.endpointSlices where slices[slice.ref] != slice {
            if let old = slices[slice.ref] { unlink(old) }
            set(slice.ref) { $0.slices[slice.ref] = slice }
            link(slice)
        }
        for pod in decoded.pods where pods[pod.ref] != pod {
            set(pod.ref) { $0.pods[pod.ref] = pod }
            changes.podNamespaces.insert(pod.namespace)
        }
        for node in decoded.nodes where nodes[node.ref] != node {
            set(node.ref) { $0.nodes[node.ref] = node }
            changes.everything = true
        }
        for cidr in decoded.serviceCIDRs {
            let ref = ObjectRef(kind: "ServiceCIDR", namespace: "", name: cidr.name)
            guard serviceCIDRs[ref] != cidr else { continue }
            set(ref) { $0.serviceCIDRs[ref] = cidr }
            changes.everything = true
        }
        // Which Service each slice names, so a Service whose slice is invalid never falls back to
        // Pods. One pass over the slices; an invalid slice's owner comes from the decoder's owner
        // list (exact for a single object, by namespace for a bulk read).
        var named = Set<String>()
        for slice in decoded.endpointSlices {
            let owner = "\(slice.namespace)/\(slice.serviceName)"
            setOwner(slice.ref, owner)
            named.insert(owner)
        }
        let unnamed = decoded.servicesWithSlices.subtracting(named)
        if !unnamed.isEmpty {
            for problem in decoded.problems where problem.skipped && problem.object?.kind == "EndpointSlice" {
                guard let ref = problem.object else { continue }
                if let owner = unnamed.first(where: { $0.hasPrefix(ref.namespace + "/") }) { setOwner(ref, owner) }
            }
        }
    }

    /// Records which service a slice (valid or not) names; a service that gains or loses its
    /// last slice switches between slices and pods for its endpoints.
    private mutating func setOwner(_ slice: ObjectRef, _ owner: String) {
        guard sliceOwners[slice] != owner else { return }
        if let old = sliceOwners[slice] { disown(old) }
        sliceOwners[slice] = owner
        ownerCounts[owner, default: 0] += 1
        changes.services.insert(serviceRef(owner))
    }

    private mutating func disown(_ owner: String) {
        ownerCounts[owner, default: 1] -= 1
        if ownerCounts[owner] == 0 { ownerCounts[owner] = nil }
        changes.services.insert(serviceRef(owner))
    }

    private func serviceRef(_ owner: String) -> ObjectRef {
        let parts = owner.split(separator: "/", maxSplits: 1).map(String.init)
        return ObjectRef(kind: "Service", namespace: parts.first ?? "", name: parts.count > 1 ? parts[1] : "")
    }

    private mutating func link(_ slice: EndpointSlice) {
        let owner = ObjectRef(kind: "Service", namespace: slice.namespace, name: slice.serviceName)
        slicesByService[owner, default: []].insert(slice.ref)
        changes.services.insert(owner)
    }

    private mutating func unlink(_ slice: EndpointSlice) {
        let owner = ObjectRef(kind: "Service", namespace: slice.namespace, name: slice.serviceName)
        slicesByService[owner]?.remove(slice.ref)
        if slicesByService[owner]?.isEmpty == true { slicesByService[owner] = nil }
        changes.services.insert(owner)
    }

    public mutating func remove(_ ref: ObjectRef) {
        if services.removeValue(forKey: ref) != nil { changes.services.insert(ref) }
        if let slice = slices.removeValue(forKey: ref) { unlink(slice) }
        if let pod = pods.removeValue(forKey: ref) { changes.podNamespaces.insert(pod.namespace) }
        if nodes.removeValue(forKey: ref) != nil || serviceCIDRs.removeValue(forKey: ref) != nil { changes.everything = true }
        problems[ref] = nil
        if let owner = sliceOwners.removeValue(forKey: ref) { disown(owner) }
    }

    private mutating func set(_ ref: ObjectRef, _ store: (inout ObjectStore) -> Void) {
        problems[ref] = problems[ref]?.filter { !$0.skipped }
        store(&self)
    }

    /// Every object, in a stable order, as the compiler takes it.
    public var state: ClusterState {
        var state = ClusterState(
            services: services.values.sorted { $0.ref < $1.ref },
            endpointSlices: slices.values.sorted { $0.ref < $1.ref },
            pods: pods.values.sorted { $0.ref < $1.ref },
            nodes: nodes.values.sorted { $0.ref < $1.ref },
            serviceCIDRs: serviceCIDRs.values.sorted { $0.name < $1.name },
            problems: problems.values.flatMap { $0 }
        )
        state.servicesWithSlices = Set(ownerCounts.keys)
        return state
    }

    public var serviceCount: Int { services.count }

    /// The service called `ref`, if known.
    public func service(_ ref: ObjectRef) -> Service? { services[ref] }

    /// Refs of the services in some namespaces.
    public func services(in namespaces: Set<String>) -> [ObjectRef] {
        services.keys.filter { namespaces.contains($0.namespace) }
    }

    /// The objects one service's endpoints come from: its slices, or (with none) the pods of
    /// its namespace and the nodes for their zones. `backends(for:)` of this state equals that of
    /// the whole store.
    public func state(for service: Service) -> ClusterState {
        let owner = "\(service.namespace)/\(service.name)"
        let sliceRefs = slicesByService[service.ref] ?? []
        var state = ClusterState(services: [service], endpointSlices: sliceRefs.compactMap { slices[$0] }.sorted { $0.ref < $1.ref })
        if state.endpointSlices.isEmpty {
            state.pods = pods.values.filter { $0.namespace == service.namespace }.sorted { $0.ref < $1.ref }
            state.nodes = nodes.values.sorted { $0.ref < $1.ref }
        }
        if ownerCounts[owner] != nil { state.servicesWithSlices = [owner] }
        return state
    }

    /// Problems of the objects as they are now that left an object out.
    public var skippedCount: Int { problems.values.reduce(0) { $0 + $1.filter(\.skipped).count } }
}
