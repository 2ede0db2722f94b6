import Synchronization

/// A backend that keeps the ruleset in memory, for unit tests of everything above the kernel.
/// It is real code, not a stub: a transaction is applied to a copy, checked the way the kernel
/// checks it (missing tables, chains and sets, duplicate objects, jumps to missing chains,
/// deleting a chain that is still referenced), and committed only when every operation succeeds.
public final class InMemoryBackend: RulesetBackend, Sendable {
    private let storage = Mutex<(ruleset: Ruleset, generation: UInt32, applied: [Transaction])>((Ruleset(), 1, []))
    /// When set, the next apply fails at the operation this picks (by index), as a poisoned object would.
    private let failure = Mutex<(@Sendable (Operation) -> BackendError?)?>(nil)

    public init(_ ruleset: Ruleset = Ruleset()) {
        storage.withLock { $0.ruleset = ruleset }
    }

    /// Every transaction committed so far, in order.
    public var applied: [Transaction] { storage.withLock { $0.applied } }
    public var ruleset: Ruleset { storage.withLock { $0.ruleset } }

    /// Makes every later apply refuse the first operation `refuse` returns an error for.
    public func refuse(_ refuse: (@Sendable (Operation) -> BackendError?)?) {
        failure.withLock { $0 = refuse }
    }

    /// Changes the rules behind the controller's back, as another tool would.
    public func tamper(_ change: (inout Ruleset) -> Void) {
        storage.withLock {
            change(&$0.ruleset)
            $0.generation &+= 1
        }
    }

    public func generation() throws(BackendError) -> UInt32 { storage.withLock { $0.generation } }

    public func read(_ tables: [TableRef]) throws(BackendError) -> Ruleset {
        let current = storage.withLock { $0.ruleset }
        let wanted = Set(tables)
        return Ruleset(tables: current.tables.filter { wanted.contains(TableRef($0.family, $0.name)) }
            .sorted { TableRef($0.family, $0.name) < TableRef($1.family, $1.name) })
    }

    public func listTables() throws(BackendError) -> [TableRef] {
        storage.withLock { $0.ruleset }.tables.map { TableRef($0.family, $0.name) }.sorted()
    }

    public func apply(_ transaction: Transaction) throws(BackendError) {
        let refuse = failure.withLock { $0 }
        var copy = storage.withLock { $0.ruleset }
        for operation in transaction.operations {
            if let error = refuse?(operation) { throw error }
            try InMemoryBackend.apply(operation, to: &copy)
        }
        try InMemoryBackend.checkJumps(copy)
        storage.withLock {
            $0.ruleset = copy
            $0.generation &+= 1
            $0.applied.append(transaction)
        }
    }

    private static func apply(_ operation: Operation, to ruleset: inout Ruleset) throws(BackendError) {
        func fail(_ errno: Int32, _ message: String) -> BackendError {
            BackendError(errno: errno, operation: operation, message: message)
        }
        let ref = operation.table
        let index = ruleset.tables.firstIndex { $0.family == ref.family && $0.name == ref.name }
        switch operation {
        case .addTable(_, let comment):
            if index == nil { ruleset.tables.append(Table(family: ref.family, name: ref.name, comment: comment)) }
            return
        case .deleteTable:
            guard let index else { throw fail(2, "no such table") }
            ruleset.tables.remove(at: index)
            return
        default:
            break
        }
        guard let index else { throw fail(2, "no such table \(ref)") }
        var table = ruleset.tables[index]
        switch operation {
        case .addSet(_, let set):
            if table.set(set.name) == nil { table.sets.append(set.withoutElements) }
        case .deleteSet(_, let name):
            guard let at = table.sets.firstIndex(where: { $0.name == name }) else { throw fail(2, "no such set \(name)") }
            table.sets.remove(at: at)
        case .addChain(_, let name, let base):
            if let existing = table.chain(name) {
                if existing.base != base { throw fail(17, "chain \(name) exists with other hook or priority") }
            } else {
                table.chains.append(Chain(name, base: base))
            }
        case .flushChain(_, let name):
            guard let at = table.chains.firstIndex(where: { $0.name == name }) else { throw fail(2, "no such chain \(name)") }
            table.chains[at].rules = []
        case .deleteChain(_, let name):
            guard let at = table.chains.firstIndex(where: { $0.name == name }) else { throw fail(2, "no such chain \(name)") }
            if table.chains[at].rules.isEmpty == false { throw fail(16, "chain \(name) is not empty") }
            let referenced = table.chains.contains { $0.rules.contains { $0.targets.contains(name) } }
                || table.sets.contains { $0.elements.contains { $0.verdict?.target == name } }
            if referenced { throw fail(16, "chain \(name) is still referenced") }
            table.chains.remove(at: at)
        case .addRule(_, let chain, let rule):
            guard let at = table.chains.firstIndex(where: { $0.name == chain }) else { throw fail(2, "no such chain \(chain)") }
            for target in rule.targets where table.chain(target) == nil { throw fail(2, "jump to missing chain \(target)") }
            for name in rule.setsUsed where table.set(name) == nil { throw fail(2, "no such set \(name)") }
            table.chains[at].rules.append(rule)
        case .addElements(_, let name, let elements):
            guard let at = table.sets.firstIndex(where: { $0.name == name }) else { throw fail(2, "no such set \(name)") }
            for element in elements {
                if table.sets[at].elements.contains(where: { $0.key == element.key }) { throw fail(17, "element exists in \(name)") }
                if let target = element.verdict?.target, table.chain(target) == nil { throw fail(2, "jump to missing chain \(target)") }
                table.sets[at].elements.append(element)
            }
            table.sets[at].elements.sort { $0.key.lexicographicallyPrecedes($1.key) }
        case .deleteElements(_, let name, let elements):
            guard let at = table.sets.firstIndex(where: { $0.name == name }) else { throw fail(2, "no such set \(name)") }
            for element in elements {
                guard let position = table.sets[at].elements.firstIndex(where: { $0.key == element.key }) else {
                    throw fail(2, "no such element in \(name)")
                }
                table.sets[at].elements.remove(at: position)
            }
        case .addTable, .deleteTable:
            break
        }
        ruleset.tables[index] = table
    }

    /// After all operations: nothing may jump to a chain that no longer exists.
    private static func checkJumps(_ ruleset: Ruleset) throws(BackendError) {
        for table in ruleset.tables {
            let names = Set(table.chains.map(\.name))
            for chain in table.chains {
                for target in chain.rules.flatMap(\.targets) where !names.contains(target) {
                    throw BackendError(errno: 2, message: "chain \(chain.name) jumps to missing chain \(target)")
                }
            }
        }
    }
}

extension Rule {
    /// Named sets and maps this rule looks up or updates.
    public var setsUsed: [Name] {
        statements.compactMap {
            switch $0 {
            case .lookup(_, let set), .notInSet(_, let set), .vmap(_, let set), .dnatMap(_, let set): set
            case .update(let map, _, _, _): map
            default: nil
            }
        }
    }
}
