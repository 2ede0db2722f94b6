import ServiceModel

/// The cluster objects the agent currently knows, keyed by kind, namespace and name, so watch
/// events can add, replace and delete single objects, and a re-list can replace a whole kind.
public struct ObjectStore: Sendable, Equatable {
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
    public mutating func replace(_ kinds: [Kind], with decoded: ClusterState) {
        for kind in kinds { removeAll(kind) }
        upsert(decoded)
    }

    /// Adds or replaces the objects in `decoded`; an object that failed to decode (a Problem
    /// naming it) replaces any earlier good copy, so a broken update never keeps stale rules.
    public mutating func upsert(_ decoded: ClusterState) {
        for problem in decoded.problems where problem.skipped {
            if let ref = problem.object { remove(ref) }
        }
        for problem in decoded.problems { problems[problem.object, default: []].append(problem) }
        for service in decoded.services { set(service.ref) { $0.services[service.ref] = service } }
        for slice in decoded.endpointSlices { set(slice.ref) { $0.slices[slice.ref] = slice } }
        for pod in decoded.pods { set(pod.ref) { $0.pods[pod.ref] = pod } }
        for node in decoded.nodes { set(node.ref) { $0.nodes[node.ref] = node } }
        for cidr in decoded.serviceCIDRs {
            let ref = ObjectRef(kind: "ServiceCIDR", namespace: "", name: cidr.name)
            set(ref) { $0.serviceCIDRs[ref] = cidr }
        }
        // Which Service each slice names, so a Service whose slice is invalid never falls back to
        // Pods. One pass over the slices; an invalid slice's owner comes from the decoder's owner
        // list (exact for a single object, by namespace for a bulk read).
        var named = Set<String>()
        for slice in decoded.endpointSlices {
            let owner = "\(slice.namespace)/\(slice.serviceName)"
            sliceOwners[slice.ref] = owner
            named.insert(owner)
        }
        let unnamed = decoded.servicesWithSlices.subtracting(named)
        if !unnamed.isEmpty {
            for problem in decoded.problems where problem.skipped && problem.object?.kind == "EndpointSlice" {
                guard let ref = problem.object else { continue }
                if let owner = unnamed.first(where: { $0.hasPrefix(ref.namespace + "/") }) { sliceOwners[ref] = owner }
            }
        }
    }

    public mutating func remove(_ ref: ObjectRef) {
        services[ref] = nil
        slices[ref] = nil
        pods[ref] = nil
        nodes[ref] = nil
        serviceCIDRs[ref] = nil
        problems[ref] = nil
        sliceOwners[ref] = nil
    }

    private mutating func set(_ ref: ObjectRef, _ store: (inout ObjectStore) -> Void) {
        problems[ref] = problems[ref]?.filter { !$0.skipped }
        store(&self)
    }

    private mutating func removeAll(_ kind: Kind) {
        switch kind {
        case .service: services = [:]
        case .endpointSlice: slices = [:]; sliceOwners = [:]
        case .pod: pods = [:]
        case .node: nodes = [:]
        case .serviceCIDR: serviceCIDRs = [:]
        }
        problems = problems.filter { $0.key?.kind != kind.rawValue }
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
        state.servicesWithSlices = Set(sliceOwners.values)
        return state
    }

    public var serviceCount: Int { services.count }
}
