import NftIR
import ServiceModel

/// Renders the IR as nft text: the only place where rules become strings.
public enum NftText {
    /// A whole ruleset as an `nft -f` script that replaces our tables atomically: each table
    /// is created if missing, deleted, then declared in full, all in one transaction.
    /// `header` lines become `#` comments at the top (what produced it, what was skipped).
    public static func script(_ ruleset: Ruleset, header: [String] = []) -> String {
        var out = "#!/usr/sbin/nft -f\n"
        for line in header { out += line.isEmpty ? "#\n" : "# \(line)\n" }
        for table in ruleset.tables {
            let ref = "\(table.family.rawValue) \(table.name)"
            out += "add table \(ref)\ndelete table \(ref)\n"
        }
        for table in ruleset.tables { out += block(table) }
        return out
    }

    /// One table in nft's block syntax, laid out as `nft list table` prints it.
    public static func block(_ table: Table) -> String {
        var parts: [String] = []
        for set in table.sets { parts.append(setBlock(set, family: table.family)) }
        for chain in table.chains { parts.append(chainBlock(chain, family: table.family)) }
        var out = "table \(table.family.rawValue) \(table.name) {\n"
        if let comment = table.comment { out += "\tcomment \(quoted(comment))\n" }
        out += parts.joined(separator: "\n")
        return out + "}\n"
    }

    /// A transaction as nft commands, one per line (what `diff` prints and `nft -f` can replay).
    public static func commands(_ transaction: Transaction) -> String {
        var out = ""
        for op in transaction.operations { out += command(op) + "\n" }
        return out
    }

    public static func command(_ op: Operation) -> String {
        func ref(_ t: TableRef) -> String { "\(t.family.rawValue) \(t.name)" }
        switch op {
        case .addTable(let t, let comment):
            return comment.map { "add table \(ref(t)) { comment \(quoted($0)); }" } ?? "add table \(ref(t))"
        case .deleteTable(let t):
            return "delete table \(ref(t))"
        case .addSet(let t, let set):
            var spec = "type \(typeSpec(set))"
            if let size = set.size { spec += "; size \(size)" }
            if !set.flags.isEmpty { spec += "; flags \(flags(set.flags))" }
            if let comment = set.comment { spec += "; comment \(quoted(comment))" }
            return "add \(set.isMap || !set.data.isEmpty ? "map" : "set") \(ref(t)) \(set.name) { \(spec); }"
        case .deleteSet(let t, let name):
            return "delete set \(ref(t)) \(name)"
        case .addChain(let t, let name, let base):
            return base.map { "add chain \(ref(t)) \(name) { \(baseSpec($0)) }" } ?? "add chain \(ref(t)) \(name)"
        case .flushChain(let t, let name):
            return "flush chain \(ref(t)) \(name)"
        case .deleteChain(let t, let name):
            return "delete chain \(ref(t)) \(name)"
        case .addRule(let t, let chain, let rule):
            return "add rule \(ref(t)) \(chain) \(self.rule(rule, family: t.family))"
        case .addElements(let t, let set, let elements):
            return "add element \(ref(t)) \(set) { \(elements.map { element($0, family: t.family) }.joined(separator: ", ")) }"
        case .deleteElements(let t, let set, let elements):
            let keys = elements.map { Element($0.key) }
            return "delete element \(ref(t)) \(set) { \(keys.map { element($0, family: t.family) }.joined(separator: ", ")) }"
        }
    }

    static func setBlock(_ set: NamedSet, family: Family) -> String {
        var out = "\t\(set.isMap || !set.data.isEmpty ? "map" : "set") \(set.name) {\n\t\ttype \(typeSpec(set))\n"
        if let size = set.size { out += "\t\tsize \(size)\n" }
        if !set.flags.isEmpty { out += "\t\tflags \(flags(set.flags))\n" }
        if let comment = set.comment { out += "\t\tcomment \(quoted(comment))\n" }
        if !set.elements.isEmpty {
            out += "\t\telements = {\n"
            out += set.elements.map { "\t\t\t" + element($0, family: family) }.joined(separator: ",\n")
            out += "\n\t\t}\n"
        }
        return out + "\t}\n"
    }

    static func chainBlock(_ chain: Chain, family: Family) -> String {
        var out = "\tchain \(chain.name) {\n"
        if let base = chain.base { out += "\t\t\(baseSpec(base))\n" }
        for rule in chain.rules { out += "\t\t\(self.rule(rule, family: family))\n" }
        return out + "\t}\n"
    }

    static func typeSpec(_ set: NamedSet) -> String {
        let data = set.isMap ? " : verdict" : set.data.isEmpty ? "" : " : " + set.data.map(\.rawValue).joined(separator: " . ")
        return set.key.map(\.rawValue).joined(separator: " . ") + data
    }

    /// Flags in the order `nft list` prints them (`dynamic,timeout`, `interval`).
    static func flags(_ flags: SetFlags) -> String {
        var names: [String] = []
        if flags.contains(.dynamic) { names.append("dynamic") }
        if flags.contains(.interval) { names.append("interval") }
        if flags.contains(.timeout) { names.append("timeout") }
        return names.joined(separator: ",")
    }

    static func baseSpec(_ base: BaseChain) -> String {
        "type \(base.type.rawValue) hook \(base.hook.rawValue) priority \(priority(base)); policy accept;"
    }

    /// nft accepts `dstnat` only on prerouting and `srcnat` only on postrouting; elsewhere the
    /// number is written (and `nft list` prints it the same way).
    static func priority(_ base: BaseChain) -> String {
        switch (base.priority.keyword, base.hook) {
        case (.dstnat, .prerouting), (.srcnat, .postrouting), (.raw, _), (.mangle, _), (.filter, _), (.security, _):
            base.priority.description
        default:
            String(base.priority.value)
        }
    }

    public static func element(_ element: Element, family: Family) -> String {
        var out = element.key.map(keyValue).joined(separator: " . ")
        if let comment = element.comment { out += " comment \(quoted(comment))" }
        if let verdict = element.verdict { out += " : " + self.verdict(verdict) }
        if !element.data.isEmpty { out += " : " + element.data.map(keyValue).joined(separator: " . ") }
        return out
    }

    static func keyValue(_ value: KeyValue) -> String {
        switch value {
        case .address(let ip): ip.description
        case .proto(let proto): proto.description
        case .port(let port): String(port)
        case .prefix(let cidr): cidr.isHost ? cidr.address.description : cidr.description
        }
    }

    public static func rule(_ rule: Rule, family: Family) -> String {
        var words = rule.statements.map { statement($0, family: family) }
        if let comment = rule.comment { words.append("comment \(quoted(comment))") }
        return words.joined(separator: " ")
    }

    public static func statement(_ statement: Statement, family: Family) -> String {
        switch statement {
        case .address(let selector, let cidr, let negated):
            let value = cidr.isHost ? cidr.address.description : cidr.description
            return "\(self.selector(selector, family: family)) \(negated ? "!= " : "")\(value)"
        case .l4proto(let proto):
            return "meta l4proto \(proto)"
        case .ctStateNew:
            return "ct state new"
        case .ctStatusDNAT:
            return "ct status dnat"
        case .fibLocal(let address):
            return "fib \(address == .saddr ? "saddr" : "daddr") type local"
        case .lookup(let selectors, let set):
            return selectors.map { selector($0, family: family) }.joined(separator: " . ") + " @\(set)"
        case .notInSet(let selectors, let set):
            return selectors.map { selector($0, family: family) }.joined(separator: " . ") + " != @\(set)"
        case .dnatMap(let selectors, let map):
            return "dnat to " + selectors.map { selector($0, family: family) }.joined(separator: " . ") + " map @\(map)"
        case .update(let map, let key, let timeout, let data):
            let keyText = key.map { selector($0, family: family) }.joined(separator: " . ")
            let dataText = data.map { selector($0, family: family) }.joined(separator: " . ")
            return "update @\(map) { \(keyText) timeout \(timeout)s : \(dataText) }"
        case .vmap(let selectors, let map):
            return selectors.map { selector($0, family: family) }.joined(separator: " . ") + " vmap @\(map)"
        case .numgenIncZero(let modulus):
            return "numgen inc mod \(modulus) 0"
        case .markBitClear(let bit):
            return "meta mark & \(hex(bit)) == \(hex(0))"
        case .setMarkBit(let bit):
            return "meta mark set meta mark | \(hex(bit))"
        case .toggleMarkBit(let bit):
            return "meta mark set meta mark ^ \(hex(bit))"
        case .dnat(let ip, let port):
            return ip.family == .ipv4 ? "dnat to \(ip):\(port)" : "dnat to [\(ip)]:\(port)"
        case .masquerade(let fullyRandom):
            return fullyRandom ? "masquerade fully-random" : "masquerade"
        case .reject:
            return "reject"
        case .verdict(let verdict):
            return self.verdict(verdict)
        }
    }

    static func selector(_ selector: Selector, family: Family) -> String {
        switch selector {
        case .saddr: "\(family.rawValue) saddr"
        case .daddr: "\(family.rawValue) daddr"
        case .l4proto: "meta l4proto"
        case .thDport: "th dport"
        case .dport(let proto): "\(proto) dport"
        case .ctOriginalDaddr: "ct original \(family.rawValue) daddr"
        case .ctOriginalProtoDst: "ct original proto-dst"
        }
    }

    public static func verdict(_ verdict: Verdict) -> String {
        switch verdict {
        case .accept: "accept"
        case .drop: "drop"
        case .return: "return"
        case .jump(let name): "jump \(name)"
        case .goto(let name): "goto \(name)"
        }
    }

    /// `0x00004000`, as `nft list` prints marks.
    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    static func quoted(_ comment: Comment) -> String { "\"\(comment.text)\"" }
}
