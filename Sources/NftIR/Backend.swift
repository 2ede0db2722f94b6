import ServiceModel

/// The one seam between the controller and whatever holds the rules: the kernel through
/// netlink, a dry-run printer, or the in-memory fake used by unit tests.
public protocol RulesetBackend: Sendable {
    /// Applies every operation of `transaction` atomically: all of it, or (on error) none of it.
    func apply(_ transaction: Transaction) throws(BackendError)

    /// Reads the named tables back into the IR. Absent tables are left out of the result;
    /// no other table is read.
    func read(_ tables: [TableRef]) throws(BackendError) -> Ruleset

    /// Every table there is (ip and ip6), contents not read.
    func listTables() throws(BackendError) -> [TableRef]

    /// The ruleset generation: it changes with every commit, by anyone. Cheap to ask, so a
    /// controller can poll it and read its tables back only when something was committed.
    func generation() throws(BackendError) -> UInt32
}

extension RulesetBackend {
    /// nftproxy's tables that exist now: `nftproxy` and its shards, in both families.
    public func ourTables() throws(BackendError) -> [TableRef] {
        try listTables().filter { Naming.isOurTable($0.name) }.sorted()
    }

    /// Everything nftproxy has in the kernel: all its tables, read back.
    public func readOurs() throws(BackendError) -> Ruleset {
        try read(ourTables())
    }
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

/// Stale UDP conntrack entries for one service port: entries whose original destination is one
/// of `destinations` at `port` (or any local address at `nodePort`, when not 0) and whose reply
/// comes from an address outside `keepReplySources`.
public struct ConntrackFlush: Sendable, Hashable {
    public var family: Family
    public var destinations: [IPAddress]
    public var port: UInt16
    public var nodePort: UInt16
    public var keepReplySources: Set<IPAddress>

    public init(family: Family, destinations: [IPAddress], port: UInt16, nodePort: UInt16, keepReplySources: Set<IPAddress>) {
        self.family = family
        self.destinations = destinations
        self.port = port
        self.nodePort = nodePort
        self.keepReplySources = keepReplySources
    }
}

/// The other kernel seam: deleting UDP conntrack entries that would keep sending a flow to an
/// endpoint that is gone (or past a service that had none), as kube-proxy does after a sync.
public protocol ConntrackCleaner: Sendable {
    /// Deletes the stale UDP entries and returns how many were deleted. TCP is never touched.
    func flush(_ requests: [ConntrackFlush]) throws(BackendError) -> Int
}
