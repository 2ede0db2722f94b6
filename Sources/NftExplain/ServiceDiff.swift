import NftIR
import NftText
import ServiceModel

/// A diff an operator can review: what changes for each Service (destinations, backends,
/// policies), rather than the raw nft transaction.
public enum ServiceDiff {
    /// One line per change, grouped under `+ ns/name`, `- ns/name` or `~ ns/name` headings;
    /// empty when nothing changes.
    public static func text(from before: Ruleset?, to after: Ruleset) -> String {
        let old = facts(before ?? Ruleset())
        let new = facts(after)
        var out: [String] = []
        for service in Set(old.keys).union(new.keys).sorted() {
            let a = old[service] ?? ServiceFacts()
            let b = new[service] ?? ServiceFacts()
            guard a != b else { continue }
            let heading = service == nodeWide ? "node-wide rules" : service
            let mark = old[service] == nil ? "+" : new[service] == nil ? "-" : "~"
            out.append("\(mark) \(heading)")
            for line in a.destinations.subtracting(b.destinations).sorted() { out.append("    - \(line)") }
            for line in b.destinations.subtracting(a.destinations).sorted() { out.append("    + \(line)") }
            for chain in Set(a.chains.keys).union(b.chains.keys).sorted() {
                let before = a.chains[chain], after = b.chains[chain]
                guard before != after else { continue }
                switch (before, after) {
                case (nil, let rules?): out.append("    + chain \(chain): \(summary(rules))")
                case (_?, nil): out.append("    - chain \(chain)")
                case (let rules?, let newRules?):
                    let gone = rules.backends.filter { !newRules.backends.contains($0) }
                    let added = newRules.backends.filter { !rules.backends.contains($0) }
                    if (!gone.isEmpty || !added.isEmpty) && rules.other == newRules.other {
                        var change = "    ~ chain \(chain): backends"
                        if !added.isEmpty { change += " +\(added.joined(separator: " +"))" }
                        if !gone.isEmpty { change += " -\(gone.joined(separator: " -"))" }
                        out.append(change)
                    } else {
                        out.append("    ~ chain \(chain): \(summary(newRules))")
                    }
                default: break
                }
            }
        }
        return out.isEmpty ? "" : out.joined(separator: "\n") + "\n"
    }

    private static let nodeWide = "\u{0}node"

    private static func summary(_ rules: ChainFacts) -> String {
        var parts: [String] = []
        if !rules.backends.isEmpty { parts.append("backends \(rules.backends.joined(separator: ", "))") }
        parts += rules.other
        return parts.joined(separator: "; ")
    }

    struct ChainFacts: Hashable {
        /// DNAT targets in round-robin order.
        var backends: [String] = []
        /// Every other rule, as nft text.
        var other: [String] = []
    }

    struct ServiceFacts: Hashable {
        /// Map and set elements, described.
        var destinations: Set<String> = []
        var chains: [String: ChainFacts] = [:]
    }

    /// Everything in a ruleset, keyed by the service (`ns/name`) it belongs to.
    static func facts(_ ruleset: Ruleset) -> [String: ServiceFacts] {
        var result: [String: ServiceFacts] = [:]
        for table in ruleset.tables {
            for set in table.sets {
                for element in set.elements {
                    let owner = element.comment.map(Naming.service(ofComment:)) ?? nodeWide
                    result[owner, default: ServiceFacts()].destinations.insert(describe(element, in: set, family: table.family))
                }
            }
            for chain in table.chains {
                let owner = Naming.service(ofChain: chain.name) ?? nodeWide
                var facts = ChainFacts()
                for rule in chain.rules {
                    if let target = rule.statements.lazy.compactMap({ statement -> String? in
                        if case .dnat(let ip, let port) = statement { return ip.family == .ipv4 ? "\(ip):\(port)" : "[\(ip)]:\(port)" }
                        return nil
                    }).first {
                        facts.backends.append(target)
                    } else {
                        facts.other.append(NftText.rule(rule, family: table.family))
                    }
                }
                result[owner, default: ServiceFacts()].chains["\(table.family.rawValue) \(chain.name)"] = facts
            }
        }
        return result
    }

    private static func describe(_ element: Element, in set: NamedSet, family: Family) -> String {
        let key = element.key.map(\.description).joined(separator: " ")
        let verdict = element.verdict.map { " → " + NftText.verdict($0) } ?? ""
        return "\(set.name) \(key)\(verdict)"
    }

}
