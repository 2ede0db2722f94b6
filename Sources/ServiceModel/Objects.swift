/// The Kubernetes objects nftproxy reads, reduced to the fields that decide packet handling.
/// Values here are already validated: a decoder that meets a bad field skips the object and
/// records a `Problem` instead of building one of these.

public enum L4Protocol: String, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    case tcp = "TCP"
    case udp = "UDP"
    case sctp = "SCTP"

    /// nft spelling (`tcp`, `udp`, `sctp`).
    public var description: String {
        switch self {
        case .tcp: "tcp"
        case .udp: "udp"
        case .sctp: "sctp"
        }
    }
    /// IANA protocol number (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP).
    public var number: UInt8 {
        switch self {
        case .tcp: 6
        case .udp: 17
        case .sctp: 132
        }
    }

    public static func < (lhs: L4Protocol, rhs: L4Protocol) -> Bool { lhs.number < rhs.number }
}

/// Which object a message or a rule is about, e.g. `Service default/web`.
public struct ObjectRef: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var kind: String
    public var namespace: String
    public var name: String

    public init(kind: String, namespace: String, name: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
    }

    public var description: String { namespace.isEmpty ? "\(kind) \(name)" : "\(kind) \(namespace)/\(name)" }

    public static func < (lhs: ObjectRef, rhs: ObjectRef) -> Bool {
        (lhs.kind, lhs.namespace, lhs.name) < (rhs.kind, rhs.namespace, rhs.name)
    }
}

/// Something in the input that was skipped or ignored, with the object and the field it is about.
public struct Problem: Sendable, Hashable, CustomStringConvertible {
    public var object: ObjectRef?
    /// The file (and document number) it came from, when known.
    public var source: String?
    /// JSON-path-like field, e.g. `spec.ports[1].port`.
    public var field: String?
    public var message: String
    /// `true` when the whole object was left out; `false` for a note (unknown kind, ignored value).
    public var skipped: Bool

    public init(object: ObjectRef?, source: String? = nil, field: String? = nil, message: String, skipped: Bool = true) {
        self.object = object
        self.source = source
        self.field = field
        self.message = message
        self.skipped = skipped
    }

    public var description: String {
        var text = skipped ? "skipped " : "note: "
        if let object { text += "\(object)" } else { text += "document" }
        if let source { text += " (\(source))" }
        text += ": "
        if let field { text += "\(field): " }
        return text + message
    }
}

public enum ServiceType: String, Sendable, Hashable {
    case clusterIP = "ClusterIP"
    case nodePort = "NodePort"
    case loadBalancer = "LoadBalancer"
    case externalName = "ExternalName"
}

public enum TrafficPolicy: String, Sendable, Hashable {
    case cluster = "Cluster"
    case local = "Local"
}

public enum TargetPort: Sendable, Hashable {
    case number(UInt16)
    case name(String)
}

public struct ServicePort: Sendable, Hashable {
    /// Empty for the single unnamed port of a service.
    public var name: String
    public var `protocol`: L4Protocol
    public var port: UInt16
    public var targetPort: TargetPort
    /// 0 when the port has no NodePort.
    public var nodePort: UInt16

    public init(name: String, protocol: L4Protocol, port: UInt16, targetPort: TargetPort, nodePort: UInt16 = 0) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
        self.targetPort = targetPort
        self.nodePort = nodePort
    }
}

public enum LoadBalancerIPMode: String, Sendable, Hashable {
    case vip = "VIP"
    case proxy = "Proxy"
}

public struct LoadBalancerIngress: Sendable, Hashable {
    public var ip: IPAddress
    /// nil when unset (treated as VIP).
    public var ipMode: LoadBalancerIPMode?

    public init(ip: IPAddress, ipMode: LoadBalancerIPMode? = nil) {
        self.ip = ip
        self.ipMode = ipMode
    }
}

public enum SessionAffinity: Sendable, Hashable {
    case none
    /// ClientIP with `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800).
    case clientIP(timeoutSeconds: Int)
}

public struct Service: Sendable, Hashable {
    public var namespace: String
    public var name: String
    public var labels: [String: String]
    public var type: ServiceType
    /// `spec.clusterIPs` (or `spec.clusterIP`), in order; empty when headless (`None`) or unset.
    public var clusterIPs: [IPAddress]
    /// `spec.clusterIP: None`.
    public var isHeadless: Bool
    public var ipFamilies: [IPFamily]
    public var ports: [ServicePort]
    /// nil when the service has no selector (endpoints are managed by hand).
    public var selector: [String: String]?
    public var externalIPs: [IPAddress]
    public var loadBalancerIngress: [LoadBalancerIngress]
    public var loadBalancerSourceRanges: [CIDR]
    public var sessionAffinity: SessionAffinity
    public var externalTrafficPolicy: TrafficPolicy
    public var internalTrafficPolicy: TrafficPolicy
    /// 0 when unset.
    public var healthCheckNodePort: UInt16
    public var externalName: String?

    public init(
        namespace: String, name: String, labels: [String: String] = [:], type: ServiceType = .clusterIP,
        clusterIPs: [IPAddress] = [], isHeadless: Bool = false, ipFamilies: [IPFamily] = [],
        ports: [ServicePort] = [], selector: [String: String]? = nil, externalIPs: [IPAddress] = [],
        loadBalancerIngress: [LoadBalancerIngress] = [], loadBalancerSourceRanges: [CIDR] = [],
        sessionAffinity: SessionAffinity = .none, externalTrafficPolicy: TrafficPolicy = .cluster,
        internalTrafficPolicy: TrafficPolicy = .cluster, healthCheckNodePort: UInt16 = 0, externalName: String? = nil
    ) {
        self.namespace = namespace
        self.name = name
        self.labels = labels
        self.type = type
        self.clusterIPs = clusterIPs
        self.isHeadless = isHeadless
        self.ipFamilies = ipFamilies
        self.ports = ports
        self.selector = selector
        self.externalIPs = externalIPs
        self.loadBalancerIngress = loadBalancerIngress
        self.loadBalancerSourceRanges = loadBalancerSourceRanges
        self.sessionAffinity = sessionAffinity
        self.externalTrafficPolicy = externalTrafficPolicy
        self.internalTrafficPolicy = internalTrafficPolicy
        self.healthCheckNodePort = healthCheckNodePort
        self.externalName = externalName
    }

    public var ref: ObjectRef { ObjectRef(kind: "Service", namespace: namespace, name: name) }

    /// The ClusterIP of one family, if the service has one.
    public func clusterIP(_ family: IPFamily) -> IPAddress? { clusterIPs.first { $0.family == family } }
}

public struct EndpointConditions: Sendable, Hashable {
    /// nil in the object means true.
    public var ready: Bool
    /// nil in the object means true.
    public var serving: Bool
    /// nil in the object means false.
    public var terminating: Bool

    public init(ready: Bool = true, serving: Bool = true, terminating: Bool = false) {
        self.ready = ready
        self.serving = serving
        self.terminating = terminating
    }
}

public struct Endpoint: Sendable, Hashable {
    /// Only the first address is used, as kube-proxy does; never empty.
    public var addresses: [IPAddress]
    public var conditions: EndpointConditions
    public var nodeName: String?
    public var zone: String?
    /// `hints.forZones[].name`; nil when the endpoint has no zone hints.
    public var hintZones: [String]?
    /// `hints.forNodes[].name`; nil when the endpoint has no node hints.
    public var hintNodes: [String]?

    public init(
        addresses: [IPAddress], conditions: EndpointConditions = EndpointConditions(), nodeName: String? = nil,
        zone: String? = nil, hintZones: [String]? = nil, hintNodes: [String]? = nil
    ) {
        self.addresses = addresses
        self.conditions = conditions
        self.nodeName = nodeName
        self.zone = zone
        self.hintZones = hintZones
        self.hintNodes = hintNodes
    }
}

public struct EndpointPort: Sendable, Hashable {
    /// Matches the Service port's name (empty for an unnamed port).
    public var name: String
    public var `protocol`: L4Protocol
    public var port: UInt16

    public init(name: String, protocol: L4Protocol, port: UInt16) {
        self.name = name
        self.protocol = `protocol`
        self.port = port
    }
}

public struct EndpointSlice: Sendable, Hashable {
    public var namespace: String
    public var name: String
    /// The `kubernetes.io/service-name` label.
    public var serviceName: String
    public var addressType: IPFamily
    public var endpoints: [Endpoint]
    public var ports: [EndpointPort]

    public init(namespace: String, name: String, serviceName: String, addressType: IPFamily, endpoints: [Endpoint], ports: [EndpointPort]) {
        self.namespace = namespace
        self.name = name
        self.serviceName = serviceName
        self.addressType = addressType
        self.endpoints = endpoints
        self.ports = ports
    }

    public var ref: ObjectRef { ObjectRef(kind: "EndpointSlice", namespace: namespace, name: name) }
}

public struct ContainerPort: Sendable, Hashable {
    public var name: String
    public var `protocol`: L4Protocol
    public var containerPort: UInt16

    public init(name: String, protocol: L4Protocol, containerPort: UInt16) {
        self.name = name
        self.protocol = `protocol`
        self.containerPort = containerPort
    }
}

public struct Pod: Sendable, Hashable {
    public var namespace: String
    public var name: String
    public var labels: [String: String]
    /// `status.podIPs` (or `status.podIP`); may be empty for a pod not yet scheduled.
    public var podIPs: [IPAddress]
    public var nodeName: String?
    /// The `Ready` condition is `True`.
    public var ready: Bool
    /// `metadata.deletionTimestamp` is set.
    public var terminating: Bool
    /// `status.phase` is Succeeded or Failed: never an endpoint.
    public var finished: Bool
    public var containerPorts: [ContainerPort]

    public init(
        namespace: String, name: String, labels: [String: String] = [:], podIPs: [IPAddress] = [],
        nodeName: String? = nil, ready: Bool = true, terminating: Bool = false, finished: Bool = false,
        containerPorts: [ContainerPort] = []
    ) {
        self.namespace = namespace
        self.name = name
        self.labels = labels
        self.podIPs = podIPs
        self.nodeName = nodeName
        self.ready = ready
        self.terminating = terminating
        self.finished = finished
        self.containerPorts = containerPorts
    }

    public var ref: ObjectRef { ObjectRef(kind: "Pod", namespace: namespace, name: name) }
}

public struct NodeAddress: Sendable, Hashable {
    /// `InternalIP`, `ExternalIP`, `Hostname` … (only IP types are kept).
    public var type: String
    public var address: IPAddress

    public init(type: String, address: IPAddress) {
        self.type = type
        self.address = address
    }
}

public struct Node: Sendable, Hashable {
    public var name: String
    public var labels: [String: String]
    /// `status.addresses` entries that hold an IP, in order.
    public var addresses: [NodeAddress]
    /// `spec.podCIDRs` (or `spec.podCIDR`).
    public var podCIDRs: [CIDR]

    public init(name: String, labels: [String: String] = [:], addresses: [NodeAddress] = [], podCIDRs: [CIDR] = []) {
        self.name = name
        self.labels = labels
        self.addresses = addresses
        self.podCIDRs = podCIDRs
    }

    public var ref: ObjectRef { ObjectRef(kind: "Node", namespace: "", name: name) }

    /// The node's primary IP per family, as kubelet orders them: the first InternalIP, else the first ExternalIP.
    public func primaryIP(_ family: IPFamily) -> IPAddress? {
        let ofFamily = addresses.filter { $0.address.family == family }
        return (ofFamily.first { $0.type == "InternalIP" } ?? ofFamily.first { $0.type == "ExternalIP" })?.address
    }
}

public struct ServiceCIDR: Sendable, Hashable {
    public var name: String
    public var cidrs: [CIDR]

    public init(name: String, cidrs: [CIDR]) {
        self.name = name
        self.cidrs = cidrs
    }
}

/// Everything read from STATE, plus what was skipped on the way in.
public struct ClusterState: Sendable, Hashable {
    public var services: [Service]
    public var endpointSlices: [EndpointSlice]
    public var pods: [Pod]
    public var nodes: [Node]
    public var serviceCIDRs: [ServiceCIDR]
    public var problems: [Problem]
    /// `namespace/name` of every Service that some EndpointSlice in the input names, including
    /// slices skipped as invalid: such a Service never falls back to endpoints from Pods.
    public var servicesWithSlices: Set<String> = []

    public init(
        services: [Service] = [], endpointSlices: [EndpointSlice] = [], pods: [Pod] = [], nodes: [Node] = [],
        serviceCIDRs: [ServiceCIDR] = [], problems: [Problem] = []
    ) {
        self.services = services
        self.endpointSlices = endpointSlices
        self.pods = pods
        self.nodes = nodes
        self.serviceCIDRs = serviceCIDRs
        self.problems = problems
    }

    /// Adds another document set's objects (e.g. the next STATE file).
    public mutating func merge(_ other: ClusterState) {
        services += other.services
        endpointSlices += other.endpointSlices
        pods += other.pods
        nodes += other.nodes
        serviceCIDRs += other.serviceCIDRs
        problems += other.problems
        servicesWithSlices.formUnion(other.servicesWithSlices)
    }
}
