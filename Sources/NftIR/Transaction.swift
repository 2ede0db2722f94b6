/// A transaction: the ordered operations of one atomic batch, and the diff that makes it.

public struct TableRef: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var family: Family
    public var name: Name

    public init(_ family: Family, _ name: Name) {
        self.family = family
        self.name = name
    }

    public var description: String { "\(family.rawValue) \(name)" }

    public static func < (lhs: TableRef, rhs: TableRef) -> Bool { (lhs.family, lhs.name) < (rhs.family, rhs.name) }
}

public enum Operation: Sendable, Hashable {
    case addTable(TableRef, comment: Comment?)
    case deleteTable(TableRef)
    /// Creates the set or map, without its elements. (Boxed: a set definition is larger than
    /// any other operation, and a full sync holds a million operations.)
    indirect case addSet(TableRef, NamedSet)
    case deleteSet(TableRef, Name)
    /// Creates the chain, without its rules.
    case addChain(TableRef, Name, BaseChain?)
    case flushChain(TableRef, Name)
    case deleteChain(TableRef, Name)
    case addRule(TableRef, chain: Name, Rule)
    case addElements(TableRef, set: Name, [Element])
    case deleteElements(TableRef, set: Name, [Element])

    public var table: TableRef {
        switch self {
        case .addTable(let t, _), .deleteTable(let t), .addSet(let t, _), .deleteSet(let t, _),
             .addChain(let t, _, _), .flushChain(let t, _), .deleteChain(let t, _), .addRule(let t, _, _),
             .addElements(let t, _, _), .deleteElements(let t, _, _):
            t
        }
    }
}

public struct Transaction: Sendable, Hashable {
    public var operations: [Operation]

    public init(_ operations: [Operation] = []) { self.operations = operations }

    public var isEmpty: Bool { operations.isEmpty }

    /// The operations that create `table` from nothing, in an order the kernel accepts:
    /// table, sets, chain headers (so every jump and goto resolves), rules, elements.
    public static func creating(_ table: Table) -> [Operation] {
        let ref = TableRef(table.family, table.name)
        var ops: [Operation] = []
        ops.reserveCapacity(1 + 2 * table.sets.count + table.chains.reduce(table.chains.count) { $0 + $1.rules.count })
        ops.append(.addTable(ref, comment: table.comment))
        ops += table.sets.map { .addSet(ref, $0.withoutElements) }
        ops += table.chains.map { .addChain(ref, $0.name, $0.base) }
        for chain in table.chains { ops += chain.rules.map { .addRule(ref, chain: chain.name, $0) } }
        for set in table.sets where !set.elements.isEmpty { ops.append(.addElements(ref, set: set.name, set.elements)) }
        return ops
    }

    /// The smallest transaction that turns `current` (nil: nothing of ours exists) into `desired`.
    ///
    /// A changed chain is flushed and refilled; a changed element is deleted and re-added. A
    /// table whose fixed parts changed (a set's type, a base chain's hook or priority) is
    /// replaced whole, in the same atomic batch.
    public static func diff(from current: Ruleset?, to desired: Ruleset) -> Transaction {
        var ops: [Operation] = []
        let currentTables = current?.tables ?? []
        for old in currentTables where !desired.tables.contains(where: { $0.family == old.family && $0.name == old.name }) {
            ops.append(.deleteTable(TableRef(old.family, old.name)))
        }
        for new in desired.tables {
            guard let old = currentTables.first(where: { $0.family == new.family && $0.name == new.name }) else {
                ops += creating(new)
                continue
            }
            if needsReplacement(old, new) {
                ops.append(.deleteTable(TableRef(old.family, old.name)))
                ops += creating(new)
            } else {
                ops += diff(old, new)
            }
        }
        return Transaction(ops)
    }

    private static func needsReplacement(_ old: Table, _ new: Table) -> Bool {
        if old.comment != new.comment { return true }
        let oldSets = Dictionary(old.sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let oldBases = Dictionary(old.chains.map { ($0.name, $0.base) }, uniquingKeysWith: { a, _ in a })
        for set in new.sets {
            if let before = oldSets[set.name], before.withoutElements != set.withoutElements { return true }
        }
        for chain in new.chains {
            if let before = oldBases[chain.name], before != chain.base { return true }
        }
        return false
    }

    /// The operations that turn `old` into `new`, one table that exists before and after with
    /// the same fixed parts: new sets and chains, rewritten chains, element changes, then what
    /// goes. `old` and `new` may also be parts of that table (the same set definitions, some of
    /// the chains and elements): what neither holds is left alone.
    public static func diff(_ old: Table, _ new: Table) -> [Operation] {
        let ref = TableRef(new.family, new.name)
        var ops: [Operation] = []
        let oldChains = Dictionary(old.chains.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let newChainNames = Set(new.chains.map(\.name))
        let oldSetNames = Set(old.sets.map(\.name))
        let newSetNames = Set(new.sets.map(\.name))

        ops += new.sets.filter { !oldSetNames.contains($0.name) }.map { .addSet(ref, $0.withoutElements) }
        ops += new.chains.filter { oldChains[$0.name] == nil }.map { .addChain(ref, $0.name, $0.base) }

        let removedChains = old.chains.filter { !newChainNames.contains($0.name) }
        var rewritten: [Chain] = []
        for chain in new.chains {
            if let before = oldChains[chain.name] {
                if before.rules != chain.rules {
                    ops.append(.flushChain(ref, chain.name))
                    rewritten.append(chain)
                }
            } else {
                rewritten.append(chain)
            }
        }
        // Removed chains are emptied before anything else goes, so no rule still jumps to a chain being deleted.
        ops += removedChains.filter { !$0.rules.isEmpty }.map { .flushChain(ref, $0.name) }
        for chain in rewritten { ops += chain.rules.map { .addRule(ref, chain: chain.name, $0) } }

        let oldSets = Dictionary(old.sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var additions: [Operation] = []
        for set in new.sets {
            guard let before = oldSets[set.name] else {
                if !set.elements.isEmpty { additions.append(.addElements(ref, set: set.name, set.elements)) }
                continue
            }
            // The data path owns a dynamic set's elements: a diff never adds or removes them.
            if set.isDynamic { continue }
            let (removed, added) = elementDiff(before.elements, set.elements)
            if !removed.isEmpty { ops.append(.deleteElements(ref, set: set.name, removed)) }
            if !added.isEmpty { additions.append(.addElements(ref, set: set.name, added)) }
        }
        ops += additions
        // Sets before chains: a map that goes may still jump to a chain that goes (the hairpin
        // buckets' map), and no rule uses it any more (its chains were flushed or rewritten).
        ops += old.sets.filter { !newSetNames.contains($0.name) }.map { .deleteSet(ref, $0.name) }
        ops += removedChains.map { .deleteChain(ref, $0.name) }
        return ops
    }

    /// Deletes the elements of a dynamic set or map that `keep` refuses, and their twins (same
    /// key) in the set `companion` first: session affinity's `affinity-clients` vouches that
    /// `affinity` holds its key, so it must never outlive it.
    public static func pruning(_ current: Ruleset?, set name: Name, companion: Name? = nil, keep: (Family, Element) -> Bool) -> [Operation] {
        var ops: [Operation] = []
        for table in current?.tables ?? [] {
            guard let map = table.set(name), map.isDynamic else { continue }
            let stale = map.elements.filter { !keep(table.family, $0) }
            guard !stale.isEmpty else { continue }
            let ref = TableRef(table.family, table.name)
            let keys = Set(stale.map(\.key))
            if let companion, let twins = table.set(companion)?.elements.filter({ keys.contains($0.key) }), !twins.isEmpty {
                ops.append(.deleteElements(ref, set: companion, twins))
            }
            ops.append(.deleteElements(ref, set: name, stale))
        }
        return ops
    }

    /// Elements to delete (gone, or changed) and to add (new, or changed), each in `desired` order.
    private static func elementDiff(_ current: [Element], _ desired: [Element]) -> (removed: [Element], added: [Element]) {
        let before = Dictionary(current.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let after = Dictionary(desired.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let removed = current.filter { after[$0.key] != $0 }
        let added = desired.filter { before[$0.key] != $0 }
        return (removed, added)
    }
}

extension NamedSet {
    /// The set's definition alone.
    public var withoutElements: NamedSet {
        var copy = self
        copy.elements = []
        return copy
    }
}
