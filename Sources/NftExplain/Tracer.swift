import NftIR
import NftText
import ServiceModel

/// Where a traced connection starts, which decides the hooks it meets.
public enum Origin: String, Sendable, Hashable, CaseIterable {
    /// A pod or any other host routed through the node: prerouting, then forward or input.
    case pod
    /// A process on the node itself: output.
    case node
    /// A client outside the cluster: the same hooks as a pod, from another address.
    case external
}

/// One new connection to trace.
public struct Connection: Sendable, Hashable {
    public var source: IPAddress
    public var destination: IPAddress
    public var port: UInt16
    public var `protocol`: L4Protocol
    public var origin: Origin

    public init(source: IPAddress, destination: IPAddress, port: UInt16, protocol: L4Protocol, origin: Origin) {
        self.source = source
        self.destination = destination
        self.port = port
        self.protocol = `protocol`
        self.origin = origin
    }
}

/// What the rules do to the connection in the end.
public enum Outcome: Sendable, Hashable {
    /// DNATed to one of `backends`; `next` is the backend the next new connection gets.
    case dnat(backends: [Endpoint], next: Endpoint)
    case reject
    case drop
    /// No rule of ours decided anything: the packet goes on to its original destination.
    case untouched

    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        public var address: IPAddress
        public var port: UInt16
        public var description: String { address.family == .ipv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
    }
}

/// One thing the tracer saw on the way.
public struct Step: Sendable, Hashable {
    public var hook: String
    /// The table holding `chain` (the node table or a shard), empty for steps outside any chain.
    public var table: String
    public var chain: String
    /// The rule as nft prints it, when a rule decided the step.
    public var rule: String?
    public var note: String
}

public struct Trace: Sendable, Hashable {
    public var connection: Connection
    public var steps: [Step]
    public var outcome: Outcome
    public var masqueraded: Bool
    /// Why the connection is (or is not) masqueraded.
    public var masqueradeReason: String
    /// The service port the connection was dispatched to, from the map element's comment.
    public var servicePort: String?
}

/// Node facts the tracer needs: which addresses are this node's (`fib … type local`).
public struct TraceContext: Sendable, Hashable {
    public var nodeIPs: [IPAddress]
    /// Per-rule `numgen inc` counters, by chain and rule index, when read from the kernel; nil = fresh.
    public var numgenCounters: [String: [Int: UInt64]]?

    public init(nodeIPs: [IPAddress], numgenCounters: [String: [Int: UInt64]]? = nil) {
        self.nodeIPs = nodeIPs
        self.numgenCounters = numgenCounters
    }
}

/// Walks nftproxy's typed ruleset for one new connection, as the kernel would: every base
/// chain of each hook in priority order, jumps, gotos and returns, verdict-map elements, the
/// round-robin cascade (all arms are reported; the next connection's pick is computed), DNAT,
/// the routing decision after it, and masquerade in postrouting.
public struct Tracer {
    let ruleset: Ruleset
    let context: TraceContext

    public init(ruleset: Ruleset, context: TraceContext) {
        self.ruleset = ruleset
        self.context = context
    }

    public func trace(_ connection: Connection) -> Trace {
        var walk = Walk(connection: connection, context: context)
        let family = Family(connection.destination.family)
        let tables = ruleset.tables.filter { $0.family == family }
        guard let table = tables.first else {
            return Trace(connection: connection, steps: [Step(hook: "-", table: "", chain: "-", rule: nil, note: "no nftproxy table for this family")],
                         outcome: .untouched, masqueraded: false, masqueradeReason: "no rules", servicePort: nil)
        }
        walk.table = table
        walk.tables = tables
        let hooks: [Hook] = connection.origin == .node ? [.output] : [.prerouting]
        for hook in hooks where !walk.finished {
            walk.run(hook: hook)
        }
        if !walk.finished {
            // Routing after DNAT: local destinations go to input, others are forwarded.
            let destination = walk.dnat?.address ?? connection.destination
            let local = context.nodeIPs.contains(destination) || destination.isLoopback
            if connection.origin != .node {
                let next: Hook = local ? .input : .forward
                walk.steps.append(Step(hook: "routing", table: "", chain: "-", rule: nil,
                                       note: "\(destination) is \(local ? "a node address: input" : "not a node address: forward")"))
                walk.run(hook: next)
            }
        }
        if !walk.finished {
            walk.run(hook: .postrouting)
        }
        let outcome: Outcome
        switch walk.terminal {
        case .reject?: outcome = .reject
        case .drop?: outcome = .drop
        default:
            if let dnat = walk.dnat {
                outcome = .dnat(backends: walk.candidates.isEmpty ? [dnat] : walk.candidates, next: walk.next ?? dnat)
            } else {
                outcome = .untouched
            }
        }
        let masqueraded = walk.masqueraded && walk.terminal != .reject && walk.terminal != .drop
        return Trace(connection: connection, steps: walk.steps, outcome: outcome, masqueraded: masqueraded,
                     masqueradeReason: masqueraded ? walk.masqueradeReason ?? "marked" : walk.masqueradeReason ?? "never marked for masquerade",
                     servicePort: walk.servicePort)
    }
}

private enum Terminal { case reject, drop, accept }

/// The mutable state of one walk.
private struct Walk {
    let connection: Connection
    let context: TraceContext
    /// The family's tables (the node table and the shards); `table` is the one whose chain runs.
    var tables: [Table] = []
    var table = Table(family: .ip, name: Naming.table)
    var steps: [Step] = []
    var mark: UInt32 = 0
    var dnat: Outcome.Endpoint?
    var candidates: [Outcome.Endpoint] = []
    var next: Outcome.Endpoint?
    var terminal: Terminal?
    var masqueraded = false
    var masqueradeReason: String?
    var servicePort: String?

    var finished: Bool { terminal == .reject || terminal == .drop }

    init(connection: Connection, context: TraceContext) {
        self.connection = connection
        self.context = context
    }

    var family: Family { table.family }
    /// The destination as rules after DNAT see it.
    var destination: IPAddress { dnat?.address ?? connection.destination }
    var port: UInt16 { dnat?.port ?? connection.port }

    mutating func run(hook: Hook) {
        // Every table's base chains of this hook, by priority (ties in table order, as registered).
        let chains = tables.flatMap { table in table.chains.filter { $0.base?.hook == hook }.map { (table, $0) } }
            .enumerated().sorted { ($0.element.1.base!.priority.value, $0.offset) < ($1.element.1.base!.priority.value, $1.offset) }
            .map(\.element)
        for (owner, chain) in chains {
            table = owner
            // A nat chain only sees a connection's first packet, and only until one of them has NATed it.
            if chain.base?.type == .nat && hook != .postrouting && dnat != nil { continue }
            if terminal == .accept { terminal = nil }
            _ = call(chain, hook: hook.rawValue, depth: 0)
            if finished { return }
        }
    }

    /// Runs a chain; returns true when a terminal verdict (or a NAT) ended the hook.
    mutating func call(_ chain: Chain, hook: String, depth: Int) -> Bool {
        guard depth < 16 else {
            steps.append(Step(hook: hook, table: table.name.rawValue, chain: chain.name.rawValue, rule: nil, note: "jump depth exceeded"))
            return true
        }
        var index = 0
        while index < chain.rules.count {
            let rule = chain.rules[index]
            switch evaluate(rule, index: index, in: chain, hook: hook, depth: depth) {
            case .next: index += 1
            case .returned: return false
            case .ended: return true
            }
        }
        return false
    }

    enum Flow { case next, returned, ended }

    mutating func evaluate(_ rule: Rule, index: Int, in chain: Chain, hook: String, depth: Int) -> Flow {
        let text = NftText.rule(rule, family: family)
        func record(_ note: String) { steps.append(Step(hook: hook, table: table.name.rawValue, chain: chain.name.rawValue, rule: text, note: note)) }
        /// The backend an `update` of this rule just wrote for the client (a session-affinity arm).
        var recorded: Outcome.Endpoint?
        for statement in rule.statements {
            switch statement {
            case .address(let selector, let cidr, let negated):
                let value = selector == .saddr ? connection.source : destination
                if cidr.contains(value) == negated { return .next }
            case .l4proto(let proto):
                if proto != connection.protocol { return .next }
            case .ctStateNew:
                continue
            case .ctStatusDNAT:
                if dnat == nil { return .next }
            case .fibLocal(let which):
                let value = which == .saddr ? connection.source : destination
                let local = context.nodeIPs.contains(value) || value.isLoopback || (which == .saddr && connection.origin == .node)
                if !local { return .next }
            case .lookup(let selectors, let name):
                guard let set = table.set(name), set.elements.contains(where: { matches($0.key, key(selectors)) }) else { return .next }
            case .notInSet(let selectors, let name):
                if let set = table.set(name), set.elements.contains(where: { matches($0.key, key(selectors)) }) { return .next }
            case .dnatMap(let selectors, let name):
                guard let map = table.set(name), let element = map.elements.first(where: { $0.key == key(selectors) }),
                      case .address(let address)? = element.data.first, case .port(let port)? = element.data.last else {
                    // A new client: the entry this rule recorded is what the map returns.
                    guard let recorded else { return .next }
                    return dnat(to: recorded, hook: hook, chain: chain, rule: text)
                }
                let target = Outcome.Endpoint(address: address, port: port)
                candidates.append(target)
                next = target
                dnat = target
                record("session affinity: this client keeps \(target)")
                return .ended
            case .update(let map, _, let timeout, let data):
                if let target = Walk.endpoint(data) { recorded = target }
                let seconds = timeout % 1000 == 0 ? "\(timeout / 1000)s" : "\(timeout)ms"
                record(data.isEmpty ? "records the client in @\(map) for session affinity (\(seconds))"
                                    : "records the backend in @\(map) for session affinity (\(seconds))")
            case .vmap(let selectors, let name):
                guard let map = table.set(name), let element = map.elements.first(where: { $0.key == key(selectors) }),
                      let verdict = element.verdict else { return .next }
                if servicePort == nil, let comment = element.comment { servicePort = comment.text }
                record("matched \(NftText.element(element, family: family)) in @\(name)")
                return apply(verdict, hook: hook, depth: depth)
            case .numgenIncZero(let modulus):
                // Report every arm; the next connection takes the first rule whose counter is due.
                if let target = dnatTarget(of: rule) { candidates.append(target) }
                let count = context.numgenCounters?[chain.name.rawValue]?[index] ?? 0
                if next == nil, count % UInt64(modulus) == 0, let target = dnatTarget(of: rule) { next = target }
                return .next
            case .markBitClear(let bit):
                if mark & bit != 0 { return .next }
            case .setMarkBit(let bit):
                mark |= bit
                record("marked for masquerade")
            case .toggleMarkBit(let bit):
                mark ^= bit
            case .dnat(let address, let port):
                return dnat(to: Outcome.Endpoint(address: address, port: port), hook: hook, chain: chain, rule: text)
            case .masquerade:
                masqueraded = true
                if masqueradeReason == nil { masqueradeReason = "marked for masquerade" }
                record("masquerade")
                return .ended
            case .reject:
                terminal = .reject
                record("reject")
                return .ended
            case .verdict(let verdict):
                return apply(verdict, hook: hook, depth: depth, rule: text, chain: chain)
            }
        }
        if rule.statements.contains(where: { if case .setMarkBit = $0 { true } else { false } }) {
            masqueradeReason = masqueradeReasonFor(rule, chain: chain)
        }
        return .next
    }

    /// The cascade's last rule (or a single backend's only rule) takes what no earlier rule did.
    mutating func dnat(to target: Outcome.Endpoint, hook: String, chain: Chain, rule: String) -> Flow {
        candidates.append(target)
        let chosen = next ?? target
        next = chosen
        dnat = chosen
        if candidates.count > 1 {
            steps.append(Step(hook: hook, table: table.name.rawValue, chain: chain.name.rawValue, rule: nil, note:
                "round-robin over \(candidates.count) backends (\(candidates.map(\.description).joined(separator: ", "))): the next connection gets \(chosen)"))
        } else {
            steps.append(Step(hook: hook, table: table.name.rawValue, chain: chain.name.rawValue, rule: rule, note: "DNAT to \(chosen)"))
        }
        return .ended
    }

    /// An address . port constant, as a session-affinity arm records its backend.
    static func endpoint(_ data: [Operand]) -> Outcome.Endpoint? {
        guard data.count == 2, case .value(.address(let address)) = data[0], case .value(.port(let port)) = data[1] else { return nil }
        return Outcome.Endpoint(address: address, port: port)
    }

    mutating func apply(_ verdict: Verdict, hook: String, depth: Int, rule: String? = nil, chain: Chain? = nil) -> Flow {
        if let rule, let chain { steps.append(Step(hook: hook, table: table.name.rawValue, chain: chain.name.rawValue, rule: rule, note: "")) }
        switch verdict {
        case .accept:
            terminal = .accept
            return .ended
        case .drop:
            terminal = .drop
            return .ended
        case .return:
            return .returned
        case .jump(let name):
            guard let target = table.chain(name) else { return .next }
            return call(target, hook: hook, depth: depth + 1) ? .ended : .next
        case .goto(let name):
            guard let target = table.chain(name) else { return .returned }
            return call(target, hook: hook, depth: depth + 1) ? .ended : .returned
        }
    }

    func key(_ selectors: [Selector]) -> [KeyValue] {
        selectors.map {
            switch $0 {
            case .saddr: .address(connection.source)
            case .daddr: .address(destination)
            case .l4proto: .proto(connection.protocol)
            case .thDport, .dport: .port(port)
            case .ctOriginalDaddr: .address(connection.destination)
            case .ctOriginalProtoDst: .port(connection.port)
            case .maskedDaddr(let bits): .address(destination.masked(by: Selector.lowBitsMask(bits, family)))
            }
        }
    }

    /// An element key matches a packet key component by component; a range matches the addresses in it.
    func matches(_ element: [KeyValue], _ packet: [KeyValue]) -> Bool {
        element.count == packet.count && zip(element, packet).allSatisfy { want, have in
            if case .prefix(let cidr) = want, case .address(let address) = have { return cidr.contains(address) }
            return want == have
        }
    }

    /// The backend a cascade arm DNATs to: its `dnat`, or the backend it records for session affinity.
    func dnatTarget(of rule: Rule) -> Outcome.Endpoint? {
        for statement in rule.statements {
            if case .dnat(let address, let port) = statement { return Outcome.Endpoint(address: address, port: port) }
            if case .update(_, _, _, let data) = statement, let target = Walk.endpoint(data) { return target }
        }
        return nil
    }

    func masqueradeReasonFor(_ rule: Rule, chain: Chain) -> String {
        if chain.name == Naming.masquerading || Naming.isHairpinBucketChain(chain.name) {
            return "hairpin: the endpoint reached itself through the service"
        }
        if rule.statements.contains(where: { if case .address(.saddr, _, true) = $0 { true } else { false } }) {
            return "the client is outside the cluster CIDR"
        }
        if rule.statements.contains(where: { if case .fibLocal(.saddr) = $0 { true } else { false } }) {
            return "the client is the node itself"
        }
        if Naming.isServicePortChain(chain.name) && chain.name.rawValue.hasPrefix("external-") {
            return "external destinations (NodePort, LoadBalancer, externalIP) with externalTrafficPolicy Cluster are masqueraded"
        }
        return "masqueradeAll"
    }
}

extension Trace {
    /// The trace as an operator reads it: one line per step, then the verdict and the masquerade decision.
    public var text: String {
        let c = connection
        let destination = c.destination.family == .ipv4 ? "\(c.destination):\(c.port)" : "[\(c.destination)]:\(c.port)"
        let from = switch c.origin {
        case .pod: "a pod"
        case .node: "the node itself"
        case .external: "outside the cluster"
        }
        var lines = ["new \(c.protocol) connection \(c.source) -> \(destination) from \(from)"]
        for step in steps {
            lines.append("  \(step.hook.padding(11)) \(step.table.isEmpty ? "" : step.table + " ")\(step.chain)")
            if let rule = step.rule { lines.append("      rule: \(rule)") }
            if !step.note.isEmpty { lines.append("      \(step.note)") }
        }
        if let servicePort { lines.append("service port: \(servicePort)") }
        switch outcome {
        case .dnat(let backends, let next):
            lines.append("verdict: DNAT to \(next) (the next new connection)")
            if backends.count > 1 { lines.append("backends in round-robin order: \(backends.map(\.description).joined(separator: ", "))") }
        case .reject: lines.append("verdict: REJECT (ICMP port unreachable: the client sees connection refused)")
        case .drop: lines.append("verdict: DROP (the client times out)")
        case .untouched: lines.append("verdict: untouched by nftproxy (no rule matched; the packet goes to \(destination))")
        }
        lines.append("masquerade: \(masqueraded ? "yes" : "no") (\(masqueradeReason))")
        return lines.joined(separator: "\n") + "\n"
    }
}

private extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
