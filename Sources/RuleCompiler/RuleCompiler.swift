import NftIR
import ServiceModel

/// What one compile produced: the rules, and what the operator should be told about them.
public struct Compilation: Sendable {
    public var ruleset: Ruleset
    /// Objects skipped or ignored (from decoding and from compiling).
    public var problems: [Problem]
    /// Services that deliberately produce no rules, and other facts worth a comment.
    public var notes: [String]
    /// eTP=Local services with a healthCheckNodePort, for the agent's health-check servers.
    public var healthChecks: [HealthCheck]
    /// Which backends each ClientIP-affinity destination may pin a client to.
    public var affinity: AffinityTargets
    /// Every UDP service port with its destinations and serving endpoints, for conntrack cleanup.
    public var udpPorts: [UDPServicePort]
    /// Services with a Local traffic policy that have endpoints, but none on this node
    /// (kube-proxy's `sync_proxy_rules_no_local_endpoints_total`), per policy.
    public var noLocalEndpoints: (internal: Int, external: Int) = (0, 0)
    /// The fragments this ruleset was assembled from, for an agent to replace services one by one.
    public var assembly: RulesetAssembly?
}

/// A UDP service port as conntrack cleanup sees it: where clients send, and which endpoint
/// addresses may answer. Conntrack entries to these destinations whose reply comes from any
/// other address are stale (a removed endpoint, or a flow recorded while there was none).
public struct UDPServicePort: Sendable, Hashable {
    public var name: ServicePortName
    public var family: IPFamily
    /// ClusterIP, externalIPs and LoadBalancer IPs, with the service port.
    public var destinations: [IPAddress]
    public var port: UInt16
    /// 0 when the port has no NodePort.
    public var nodePort: UInt16
    /// Addresses of serving endpoints (ready, or serving while terminating), whatever the policies.
    public var servingEndpoints: Set<IPAddress>
}

/// The backends a session-affinity entry may point at, per original destination. An entry whose
/// backend is not listed (gone, or the service lost affinity) is stale and gets deleted.
public struct AffinityTargets: Sendable, Hashable {
    /// `[address, proto, port]` of ClusterIPs, externalIPs and LoadBalancer IPs → backends `[address, port]`.
    var destinations: [Family: [[KeyValue]: Set<[KeyValue]>]] = [:]
    /// `[proto, nodePort]` → backends.
    var nodePorts: [Family: [[KeyValue]: Set<[KeyValue]>]] = [:]

    /// Whether an element of the `affinity` map (client . destination . proto . port → backend) is still good.
    public func keeps(_ family: Family, _ element: Element) -> Bool {
        guard element.key.count == 4 else { return false }
        let destination = Array(element.key[1...3])
        if destinations[family]?[destination]?.contains(element.data) == true { return true }
        return nodePorts[family]?[Array(element.key[2...3])]?.contains(element.data) == true
    }
}

/// What a load balancer's health check of an eTP=Local service should learn from this node.
public struct HealthCheck: Sendable, Hashable {
    public var service: ObjectRef
    public var nodePort: UInt16
    /// Distinct IPs of this node's ready endpoints (terminating ones do not count).
    public var localEndpoints: Int
}

/// Turns cluster state and node facts into nftproxy's ruleset. Pure: no I/O, no clock.
///
/// Layout (see DESIGN.md, "What the kernel charges"): a fixed handful of sets and maps per
/// table, each possibly huge, bound from a fixed number of rules. Every service port owns a
/// few chains in its service's shard table (see `Sharding`); a change to one service rewrites
/// only its chains and elements (`ServiceFragment`, `RulesetAssembly`).
public enum RuleCompiler {
    public static func compile(_ state: ClusterState, config: NodeConfig) -> Compilation {
        let facts = NodeFacts(config: config, state: state)
        let sharding = Sharding(config, services: state.services.count)
        var assembly = RulesetAssembly(facts: facts, sharding: sharding)
        let index = EndpointIndex(state)
        var problems = state.problems
        for service in state.services.sorted(by: { ($0.namespace, $0.name) < ($1.namespace, $1.name) }) {
            let fragment = RuleCompiler.fragment(service, backends: index.backends(for: service), facts: facts, sharding: sharding)
            problems += fragment.problems
            assembly.insert(fragment)
        }
        return assembly.compilation(problems: problems)
    }

    /// One service's share of the ruleset, from the service and its backends alone.
    public static func fragment(_ service: Service, backends resolved: (ports: [ServicePortName: [Backend]], problems: [Problem]),
                                facts: NodeFacts, sharding: Sharding) -> ServiceFragment {
        var fragment = ServiceFragment(service: service.ref)
        if service.type == .externalName {
            fragment.note = "\(service.ref): type ExternalName, no rules (DNS only)"
            return fragment
        }
        if service.isHeadless || service.clusterIPs.isEmpty {
            fragment.note = "\(service.ref): headless (clusterIP None), no rules"
            return fragment
        }
        fragment.problems = resolved.problems
        for port in service.ports where port.protocol == .udp {
            let name = ServicePortName(namespace: service.namespace, name: service.name, port: port.name, protocol: .udp)
            for family in IPFamily.allCases {
                guard let clusterIP = service.clusterIP(family) else { continue }
                let serving = (resolved.ports[name] ?? []).filter { $0.address.family == family && $0.conditions.serving }
                let others = (service.externalIPs + service.loadBalancerIngress.map(\.ip)).filter { $0.family == family }
                fragment.udpPorts.append(UDPServicePort(name: name, family: family, destinations: [clusterIP] + others, port: port.port,
                                                        nodePort: port.nodePort, servingEndpoints: Set(serving.map(\.address))))
            }
        }
        // Only a Local policy can lack local endpoints.
        let lists = service.internalTrafficPolicy == .local || service.externalTrafficPolicy == .local
            ? resolved.ports.values.map { EndpointLists($0, nodeName: facts.nodeName, zone: nil) } : []
        if lists.contains(where: \.hasAny) && !lists.contains(where: { !$0.local.isEmpty }) {
            let external = service.type == .nodePort || service.type == .loadBalancer || !service.externalIPs.isEmpty
            fragment.noLocalEndpoints = (service.internalTrafficPolicy == .local, service.externalTrafficPolicy == .local && external)
        }
        if service.externalTrafficPolicy == .local && service.healthCheckNodePort != 0 {
            let local = resolved.ports.values.joined().filter {
                $0.conditions.ready && !$0.conditions.terminating && !facts.nodeName.isEmpty && $0.nodeName == facts.nodeName
            }
            fragment.healthCheck = HealthCheck(service: service.ref, nodePort: service.healthCheckNodePort,
                                               localEndpoints: Set(local.map(\.address)).count)
        }
        let shard = sharding.table(namespace: service.namespace, name: service.name)
        for family in IPFamily.allCases where service.clusterIP(family) != nil {
            var builder = FragmentBuilder(family: family, facts: facts, shard: shard)
            builder.add(service, backends: resolved.ports, into: &fragment)
        }
        return fragment
    }
}

/// Which endpoints serve a service port, after conditions, topology and policies
/// (kube-proxy's `CategorizeEndpoints`).
struct EndpointLists {
    /// Endpoints for cluster-wide traffic: ready ones (narrowed by topology hints), else
    /// serving-and-terminating ones.
    var cluster: [Backend]
    /// This node's endpoints: local ready ones, else local serving-and-terminating ones.
    var local: [Backend]
    /// Some endpoint anywhere is ready, or serving while terminating.
    var hasAny: Bool

    init(_ backends: [Backend], nodeName: String, zone: String?) {
        // Every endpoint ready is the rule: then the lists share the input's storage.
        func readyOnes(_ list: [Backend]) -> [Backend] { list.allSatisfy(\.conditions.ready) ? list : list.filter(\.conditions.ready) }
        let ready = readyOnes(backends)
        cluster = ready.isEmpty
            ? backends.filter { $0.conditions.serving && $0.conditions.terminating }
            : EndpointLists.topologyFiltered(ready, nodeName: nodeName, zone: zone)
        let mine = backends.filter { !nodeName.isEmpty && $0.nodeName == nodeName }
        let localReady = readyOnes(mine)
        local = localReady.isEmpty ? mine.filter { $0.conditions.serving && $0.conditions.terminating } : localReady
        hasAny = !cluster.isEmpty
    }

    /// Hints count only when every ready endpoint has them and at least one names this node
    /// (forNodes) or this node's zone (forZones); otherwise all ready endpoints are used.
    static func topologyFiltered(_ ready: [Backend], nodeName: String, zone: String?) -> [Backend] {
        if !nodeName.isEmpty, ready.allSatisfy({ $0.hintNodes != nil }) {
            let forNode = ready.filter { $0.hintNodes?.contains(nodeName) == true }
            if !forNode.isEmpty { return forNode }
        }
        if let zone, ready.allSatisfy({ $0.hintZones != nil }) {
            let forZone = ready.filter { $0.hintZones?.contains(zone) == true }
            if !forZone.isEmpty { return forZone }
        }
        return ready
    }
}

