/// The one seam between the controller and whatever holds the rules: the kernel through
/// netlink, a dry-run printer, or the in-memory fake used by unit tests.
public protocol RulesetBackend: Sendable {
    /// Applies every operation of `transaction` atomically: all of it, or (on error) none of it.
    func apply(_ transaction: Transaction) throws(BackendError)

    /// Reads the named tables back into the IR. Absent tables are left out of the result;
    /// no other table is read.
    func read(_ tables: [TableRef]) throws(BackendError) -> Ruleset
}

/// A failed apply or read: the kernel's errno, the operation it refused (when known), and why.
public struct BackendError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The errno (EPERM, ENOENT, EINVAL …), or 0 when the failure was not the kernel's.
    public var errno: Int32
    /// The operation the kernel refused, mapped back from the netlink sequence number.
    public var operation: Operation?
    public var message: String

    public init(errno: Int32, operation: Operation? = nil, message: String) {
        self.errno = errno
        self.operation = operation
        self.message = message
    }

    public var description: String {
        guard let operation else { return message }
        return "\(message) (while \(operation.summary))"
    }
}

extension Operation {
    /// A short, human description naming the object, e.g. `adding a rule to chain ip nftproxy services`.
    public var summary: String {
        switch self {
        case .addTable(let t, _): "adding table \(t)"
        case .deleteTable(let t): "deleting table \(t)"
        case .addSet(let t, let set): "adding \(set.isMap ? "map" : "set") \(t) \(set.name)"
        case .deleteSet(let t, let name): "deleting set \(t) \(name)"
        case .addChain(let t, let name, _): "adding chain \(t) \(name)"
        case .flushChain(let t, let name): "flushing chain \(t) \(name)"
        case .deleteChain(let t, let name): "deleting chain \(t) \(name)"
        case .addRule(let t, let chain, _): "adding a rule to chain \(t) \(chain)"
        case .addElements(let t, let set, let elements): "adding \(elements.count) element(s) to \(t) \(set)"
        case .deleteElements(let t, let set, let elements): "deleting \(elements.count) element(s) from \(t) \(set)"
        }
    }
}
