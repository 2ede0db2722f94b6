import NftIR
import ServiceModel

/// Renders the IR as nft text: the only place where rules become strings.
///
/// Every entry point writes into one `TextBuffer`; the grammar below appends each piece in
/// place, so a whole ruleset is rendered without an intermediate String per line or word.
public enum NftText {
    /// A whole ruleset as an `nft -f` script that replaces our tables atomically: each table
    /// is created if missing, deleted, then declared in full, all in one transaction.
    /// `header` lines become `#` comments at the top (what produced it, what was skipped).
    public static func script(_ ruleset: Ruleset, header: [String] = []) -> String {
        var out = TextBuffer(capacity: ruleset.tables.reduce(4096) { $0 + estimatedSize($1) })
        out.append("#!/usr/sbin/nft -f\n")
        for line in header {
            out.append(line.isEmpty ? "#" : "# ")
            out.append(string: line)
            out.append(ascii: UInt8(ascii: "\n"))
        }
        for table in ruleset.tables {
            out.append("add table ")
            out.appendRef(table.family, table.name)
            out.append("\ndelete table ")
            out.appendRef(table.family, table.name)
            out.append(ascii: UInt8(ascii: "\n"))
        }
        for table in ruleset.tables { out.append(table) }
        return out.string
    }

    /// One table in nft's block syntax, laid out as `nft list table` prints it.
    public static func block(_ table: Table) -> String {
        var out = TextBuffer(capacity: estimatedSize(table))
        out.append(table)
        return out.string
    }

    /// A transaction as nft commands, one per line (what `diff` prints and `nft -f` can replay).
    public static func commands(_ transaction: Transaction) -> String {
        var out = TextBuffer()
        for op in transaction.operations {
            out.append(op)
            out.append(ascii: UInt8(ascii: "\n"))
        }
        return out.string
    }

    public static func command(_ op: Operation) -> String { text { $0.append(op) } }

    public static func element(_ element: Element, family: Family) -> String { text { $0.append(element, family: family) } }

    public static func rule(_ rule: Rule, family: Family) -> String { text { $0.append(rule, family: family) } }

    public static func statement(_ statement: Statement, family: Family) -> String {
        text { $0.append(statement, family: family) }
    }

    public static func verdict(_ verdict: Verdict) -> String { text { $0.append(verdict) } }

    /// Room for a table's text, so the buffer grows once instead of doubling its way up:
    /// rules and elements average 60–90 bytes each in rendered rulesets; a wrong guess only
    /// costs a reallocation.
    private static func estimatedSize(_ table: Table) -> Int {
        let lines = table.sets.reduce(0) { $0 + $1.elements.count } + table.chains.reduce(0) { $0 + $1.rules.count }
        return 1024 + 96 * lines + 64 * (table.sets.count + table.chains.count)
    }

    private static func text(_ render: (inout TextBuffer) -> Void) -> String {
        var out = TextBuffer()
        render(&out)
        return out.string
    }
}

/// The nft grammar, one `append` per IR value.
extension TextBuffer {
    mutating func append(_ table: Table) {
        append("table ")
        appendRef(table.family, table.name)
        append(" {\n")
        if let comment = table.comment {
            append("\tcomment ")
            append(comment)
            append(ascii: UInt8(ascii: "\n"))
        }
        // sets, then chains, with an empty line between two blocks
        for (index, set) in table.sets.enumerated() {
            if index > 0 { append(ascii: UInt8(ascii: "\n")) }
            append(set, family: table.family)
        }
        for (index, chain) in table.chains.enumerated() {
            if index > 0 || !table.sets.isEmpty { append(ascii: UInt8(ascii: "\n")) }
            append(chain, family: table.family)
        }
        append("}\n")
    }

    mutating func append(_ set: NamedSet, family: Family) {
        append(set.isMap || !set.data.isEmpty ? "\tmap " : "\tset ")
        append(set.name)
        append(" {\n\t\ttype ")
        appendType(set)
        append(ascii: UInt8(ascii: "\n"))
        if let size = set.size {
            append("\t\tsize ")
            append(decimal: Int(size))
            append(ascii: UInt8(ascii: "\n"))
        }
        if !set.flags.isEmpty {
            append("\t\tflags ")
            append(set.flags)
            append(ascii: UInt8(ascii: "\n"))
        }
        if let comment = set.comment {
            append("\t\tcomment ")
            append(comment)
            append(ascii: UInt8(ascii: "\n"))
        }
        if !set.elements.isEmpty {
            append("\t\telements = {\n")
            for (index, element) in set.elements.enumerated() {
                append(index == 0 ? "\t\t\t" : ",\n\t\t\t")
                append(element, family: family)
            }
            append("\n\t\t}\n")
        }
        append("\t}\n")
    }

    mutating func append(_ chain: Chain, family: Family) {
        append("\tchain ")
        append(chain.name)
        append(" {\n")
        if let base = chain.base {
            append("\t\t")
            append(base)
            append(ascii: UInt8(ascii: "\n"))
        }
        for rule in chain.rules {
            append("\t\t")
            append(rule, family: family)
            append(ascii: UInt8(ascii: "\n"))
        }
        append("\t}\n")
    }

    mutating func append(_ op: Operation) {
        switch op {
        case .addTable(let t, let comment):
            append("add table ")
            appendRef(t)
            if let comment {
                append(" { comment ")
                append(comment)
                append("; }")
            }
        case .deleteTable(let t):
            append("delete table ")
            appendRef(t)
        case .addSet(let t, let set):
            append(set.isMap || !set.data.isEmpty ? "add map " : "add set ")
            appendRef(t)
            append(ascii: UInt8(ascii: " "))
            append(set.name)
            append(" { type ")
            appendType(set)
            if let size = set.size {
                append("; size ")
                append(decimal: Int(size))
            }
            if !set.flags.isEmpty {
                append("; flags ")
                append(set.flags)
            }
            if let comment = set.comment {
                append("; comment ")
                append(comment)
            }
            append("; }")
        case .deleteSet(let t, let name):
            append("delete set ")
            appendRef(t, name)
        case .addChain(let t, let name, let base):
            append("add chain ")
            appendRef(t, name)
            if let base {
                append(" { ")
                append(base)
                append(" }")
            }
        case .flushChain(let t, let name):
            append("flush chain ")
            appendRef(t, name)
        case .deleteChain(let t, let name):
            append("delete chain ")
            appendRef(t, name)
        case .addRule(let t, let chain, let rule):
            append("add rule ")
            appendRef(t, chain)
            append(ascii: UInt8(ascii: " "))
            append(rule, family: t.family)
        case .addElements(let t, let set, let elements):
            append("add element ")
            appendRef(t, set)
            append(" { ")
            for (index, element) in elements.enumerated() {
                if index > 0 { append(", ") }
                append(element, family: t.family)
            }
            append(" }")
        case .deleteElements(let t, let set, let elements):
            // by key alone: nft finds the element without its comment or verdict (a host prefix
            // in the key is written as its address, as `Element.init` would have made it)
            append("delete element ")
            appendRef(t, set)
            append(" { ")
            for (index, element) in elements.enumerated() {
                if index > 0 { append(", ") }
                appendKey(element.key)
            }
            append(" }")
        }
    }

    mutating func append(_ element: Element, family: Family) {
        appendKey(element.key)
        if let comment = element.comment {
            append(" comment ")
            append(comment)
        }
        if let verdict = element.verdict {
            append(" : ")
            append(verdict)
        }
        if !element.data.isEmpty {
            append(" : ")
            appendKey(element.data)
        }
    }

    mutating func append(_ rule: Rule, family: Family) {
        for (index, statement) in rule.statements.enumerated() {
            if index > 0 { append(ascii: UInt8(ascii: " ")) }
            append(statement, family: family)
        }
        if let comment = rule.comment {
            if !rule.statements.isEmpty { append(ascii: UInt8(ascii: " ")) }
            append("comment ")
            append(comment)
        }
    }

    mutating func append(_ statement: Statement, family: Family) {
        switch statement {
        case .address(let selector, let cidr, let negated):
            append(selector, family: family)
            append(negated ? " != " : " ")
            appendHostOrPrefix(cidr)
        case .l4proto(let proto):
            append("meta l4proto ")
            append(proto)
        case .ctStateNew:
            append("ct state new")
        case .ctStatusDNAT:
            append("ct status dnat")
        case .fibLocal(let address):
            // a `switch`, not `==`, on the IR's enums: see `append(_ family:)`
            switch address {
            case .saddr: append("fib saddr type local")
            case .daddr: append("fib daddr type local")
            }
        case .lookup(let selectors, let set):
            append(selectors, family: family)
            append(" @")
            append(set)
        case .notInSet(let selectors, let set):
            append(selectors, family: family)
            append(" != @")
            append(set)
        case .dnatMap(let selectors, let map):
            append("dnat to ")
            append(selectors, family: family)
            append(" map @")
            append(map)
        case .update(let map, let key, let timeout, let data):
            append("update @")
            append(map)
            append(" { ")
            append(key, family: family)
            append(" timeout ")
            if timeout % 1000 == 0 {
                append(decimal: Int(timeout / 1000))
                append("s")
            } else {
                append(decimal: Int(timeout))
                append("ms")
            }
            if !data.isEmpty {
                append(" : ")
                for (index, operand) in data.enumerated() {
                    if index > 0 { append(" . ") }
                    switch operand {
                    case .field(let selector): append(selector, family: family)
                    case .value(let value): appendKey([value])
                    }
                }
            }
            append(" }")
        case .vmap(let selectors, let map):
            append(selectors, family: family)
            append(" vmap @")
            append(map)
        case .numgenIncZero(let modulus):
            append("numgen inc mod ")
            append(decimal: Int(modulus))
            append(" 0")
        case .markBitClear(let bit):
            append("meta mark & ")
            appendMark(bit)
            append(" == ")
            appendMark(0)
        case .setMarkBit(let bit):
            append("meta mark set meta mark | ")
            appendMark(bit)
        case .toggleMarkBit(let bit):
            append("meta mark set meta mark ^ ")
            appendMark(bit)
        case .dnat(let ip, let port):
            // An IPv6 address is bracketed so its colons cannot be read as the port's.
            switch ip.family {
            case .ipv4:
                append("dnat to ")
                append(ip)
            case .ipv6:
                append("dnat to [")
                append(ip)
                append(ascii: UInt8(ascii: "]"))
            }
            append(ascii: UInt8(ascii: ":"))
            append(decimal: Int(port))
        case .masquerade(let fullyRandom):
            append(fullyRandom ? "masquerade fully-random" : "masquerade")
        case .reject:
            append("reject")
        case .verdict(let verdict):
            append(verdict)
        }
    }

    /// A concatenation: `ip daddr . meta l4proto . th dport`.
    mutating func append(_ selectors: [Selector], family: Family) {
        for (index, selector) in selectors.enumerated() {
            if index > 0 { append(" . ") }
            append(selector, family: family)
        }
    }

    mutating func append(_ selector: Selector, family: Family) {
        switch selector {
        case .saddr:
            append(family)
            append(" saddr")
        case .daddr:
            append(family)
            append(" daddr")
        case .l4proto:
            append("meta l4proto")
        case .thDport:
            append("th dport")
        case .dport(let proto):
            append(proto)
            append(" dport")
        case .ctOriginalDaddr:
            append("ct original ")
            append(family)
            append(" daddr")
        case .ctOriginalProtoDst:
            append("ct original proto-dst")
        case .maskedDaddr(let bits):
            append(family)
            append(" daddr & ")
            append(Selector.lowBitsMask(bits, family))
        }
    }

    mutating func append(_ verdict: Verdict) {
        switch verdict {
        case .accept: append("accept")
        case .drop: append("drop")
        case .return: append("return")
        case .jump(let name):
            append("jump ")
            append(name)
        case .goto(let name):
            append("goto ")
            append(name)
        }
    }

    /// A key or data tuple: `10.96.0.1 . tcp . 80`.
    mutating func appendKey(_ values: [KeyValue]) {
        for (index, value) in values.enumerated() {
            if index > 0 { append(" . ") }
            switch value {
            case .address(let ip): append(ip)
            case .proto(let proto): append(proto)
            case .port(let port): append(decimal: Int(port))
            case .prefix(let cidr): appendHostOrPrefix(cidr)
            }
        }
    }

    /// A one-address prefix is written as the address, as `nft list` prints it.
    mutating func appendHostOrPrefix(_ cidr: CIDR) {
        // `cidr.isHost`, spelled out: a call into ServiceModel is opaque to the optimizer,
        // which then retains everything the callers are rendering around it.
        let hostLength = switch cidr.address.family {
        case .ipv4: 32
        case .ipv6: 128
        }
        if cidr.prefixLength == hostLength { append(cidr.address) } else { append(cidr) }
    }

    /// `type ipv4_addr . inet_proto . inet_service : verdict`, without the `type `.
    mutating func appendType(_ set: NamedSet) {
        for (index, type) in set.key.enumerated() {
            if index > 0 { append(" . ") }
            append(string: type.rawValue)
        }
        if set.isMap {
            append(" : verdict")
        } else if !set.data.isEmpty {
            append(" : ")
            for (index, type) in set.data.enumerated() {
                if index > 0 { append(" . ") }
                append(string: type.rawValue)
            }
        }
    }

    /// Flags in the order `nft list` prints them (`dynamic,timeout`, `interval`).
    mutating func append(_ flags: SetFlags) {
        var first = true
        for (flag, name) in [(SetFlags.dynamic, "dynamic"), (.interval, "interval"), (.timeout, "timeout")] where flags.contains(flag) {
            if !first { append(ascii: UInt8(ascii: ",")) }
            first = false
            append(string: name)
        }
    }

    mutating func append(_ base: BaseChain) {
        append("type ")
        append(string: base.type.rawValue)
        append(" hook ")
        append(string: base.hook.rawValue)
        append(" priority ")
        // nft accepts `dstnat` only on prerouting and `srcnat` only on postrouting; elsewhere the
        // number is written (and `nft list` prints it the same way).
        switch (base.priority.keyword, base.hook) {
        case (.dstnat, .prerouting), (.srcnat, .postrouting), (.raw, _), (.mangle, _), (.filter, _), (.security, _):
            append(string: base.priority.description)
        default:
            append(decimal: Int(base.priority.value))
        }
        append("; policy accept;")
    }

    /// `0x00004000`, as `nft list` prints marks.
    mutating func appendMark(_ value: UInt32) {
        append("0x")
        append(hex: value, minimumDigits: 8)
    }

    mutating func append(_ family: Family) {
        // Not `family == .ip`: `==` on an enum of another module compiles to a builtin whose
        // effects the optimizer does not know, so every caller up to the rule loop would
        // retain (and release) the IR values it is rendering around this call.
        switch family {
        case .ip: append("ip")
        case .ip6: append("ip6")
        }
    }

    /// nft spells protocols in lowercase.
    mutating func append(_ proto: L4Protocol) {
        switch proto {
        case .tcp: append("tcp")
        case .udp: append("udp")
        case .sctp: append("sctp")
        }
    }

    mutating func append(_ name: Name) { append(string: name.rawValue) }

    /// `Comment` has already replaced the characters nft cannot take between quotes.
    mutating func append(_ comment: Comment) {
        append(ascii: UInt8(ascii: "\""))
        append(string: comment.text)
        append(ascii: UInt8(ascii: "\""))
    }

    /// `ip nftproxy`
    mutating func appendRef(_ family: Family, _ table: Name) {
        append(family)
        append(ascii: UInt8(ascii: " "))
        append(table)
    }

    mutating func appendRef(_ table: TableRef) { appendRef(table.family, table.name) }

    /// `ip nftproxy services`
    mutating func appendRef(_ table: TableRef, _ object: Name) {
        appendRef(table)
        append(ascii: UInt8(ascii: " "))
        append(object)
    }
}
