internal import CNftables
import NftIR
import ServiceModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The kernel backend: lowers a transaction into one atomic nfnetlink batch, written directly,
/// and reads nftproxy's own tables back into the IR.
///
/// Each call opens its own NETLINK_NETFILTER socket (in `netnsPath`'s network namespace when
/// given, else the caller's), so the value is freely shareable across threads.
public struct NetlinkBackend: RulesetBackend {
    /// A network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`); nil = the current one.
    public let netnsPath: String?
    let sockets: SocketPool

    public init(netnsPath: String? = nil) {
        self.netnsPath = netnsPath
        sockets = SocketPool(netnsPath: netnsPath)
    }

    /// Applies `transaction` as one batch: BATCH_BEGIN carrying the generation id read just
    /// before sending, one message per object (elements split at the 64 KiB attribute limit),
    /// BATCH_END. The kernel commits all of it or none of it.
    ///
    /// - Throws: `BackendError` with the kernel's errno and text, and the operation whose
    ///   message the kernel refused; ERESTART when another writer committed in between.
    public func apply(_ transaction: Transaction) throws(BackendError) {
        try apply(transaction, generation: nil)
    }

    /// `apply`, with the generation id to send given (tests use it to stand in for a concurrent writer).
    func apply(_ transaction: Transaction, generation fixedGeneration: UInt32?) throws(BackendError) {
        guard !transaction.isEmpty else { return }
        try sockets.withSocket { socket throws(BackendError) in try apply(transaction, generation: fixedGeneration, on: socket) }
    }

    /// `apply`, for a transaction no one else holds, such as a one-shot full sync: each operation
    /// is released once its message is written, and the memory released is handed back to the
    /// system every 64 MiB of batch. The rules and elements then leave as the batch grows, instead
    /// of both being resident at full size when it is sent (at 100k services the batch is about
    /// 500 MiB, and so is what it is made from). A refused operation is rebuilt from the message
    /// the kernel refused (see `RefusedMessage`).
    ///
    /// The memory only goes if nothing else holds the operations' rules and elements: drop the
    /// ruleset the transaction was computed from first, and pass the transaction with `consume`.
    public func apply(consuming transaction: consuming Transaction) throws(BackendError) {
        guard !transaction.isEmpty else { return }
        var operations = (consume transaction).operations
        try sockets.withSocket { socket throws(BackendError) in
            var generation: UInt32?
            let catalogs = try setCatalogs(operations, socket: socket, generation: &generation)
            let batch = Batch(firstSeq: socket.nextSeq())
            var writer = BatchWriter(batch: batch, catalogs: catalogs)
            // Taken from the end of the reversed array, each operation is destroyed after use.
            operations.reverse()
            var index = 0
            var trimAt = BatchWriter.trimPages
            while let operation = operations.popLast() {
                try writer.add(operation, index: index)
                index += 1
                if batch.pageCount >= trimAt {
                    returnFreeMemory()
                    trimAt += BatchWriter.trimPages
                }
            }
            try send(batch, generation: generation, on: socket) { _, seq in
                batch.message(seq).flatMap { RefusedMessage.operation($0, catalogs: catalogs) }
            }
        }
    }

    private func apply(_ transaction: Transaction, generation fixedGeneration: UInt32?, on socket: NetlinkSocket) throws(BackendError) {
        var generation = fixedGeneration
        let catalogs = try setCatalogs(transaction.operations, socket: socket, generation: &generation)
        let batch = Batch(firstSeq: socket.nextSeq())
        var writer = BatchWriter(batch: batch, catalogs: catalogs)
        for (index, operation) in transaction.operations.enumerated() {
            try writer.add(operation, index: index)
        }
        try send(batch, generation: generation, on: socket) { index, _ in transaction.operations[index] }
    }

    /// Ends `batch`, sends it with the generation id (`generation`, or the kernel's now), and reads
    /// the acks; `refused` names the operation of a refused message (its index, its sequence number).
    private func send(_ batch: Batch, generation: UInt32?, on socket: NetlinkSocket,
                      refused: (Int, UInt32) -> Operation?) throws(BackendError) {
        batch.end()
        _ = socket.reserveSeqs(batch.messageCount - 1)

        // Only errors are acknowledged (plus BATCH_END on kernels ≥ 6.10), so a receive buffer
        // of 1 KiB per message holds every ack even if every message fails (nft's sizing).
        socket.setBuffer(send: false, bytes: min(max(batch.messageCount * 1024, 256 * 1024), 1 << 30))
        if let generation { batch.setGeneration(generation) } else { batch.setGeneration(try socket.generation()) }
        _ = try batch.send(on: socket)
        try readAcks(socket, batch, refused: refused)
    }

    /// The definitions of the sets each table's rules and elements name (see `SetCatalog`): those
    /// the transaction creates, and the kernel's for the others. Those are read only when some
    /// operation names a set the transaction does not create, after reading the generation, so
    /// that a commit by anyone in between fails the batch (ERESTART) instead of going unseen.
    private func setCatalogs(_ operations: [Operation], socket: NetlinkSocket,
                             generation: inout UInt32?) throws(BackendError) -> [TableRef: SetCatalog] {
        var created: [TableRef: SetCatalog] = [:]
        var named: [TableRef: Set<Name>] = [:]
        for operation in operations {
            switch operation {
            case .addSet(let table, let set):
                created[table, default: SetCatalog()].add(set)
            case .addRule(let table, _, let rule):
                for statement in rule.statements {
                    if let name = statement.setName { named[table, default: []].insert(name) }
                }
            case .addElements(let table, let set, _), .deleteElements(let table, let set, _):
                named[table, default: []].insert(set)
            default:
                break
            }
        }
        var catalogs = created
        for (table, names) in named.sorted(by: { $0.key < $1.key }) where !names.isSubset(of: created[table]?.names ?? []) {
            if generation == nil { generation = try socket.generation() }
            // A change names a few sets: those are asked for one by one rather than dumping all
            // of a table's (a few hundred in a node table with hairpin buckets).
            let missing = names.subtracting(created[table]?.names ?? [])
            let reader = TableReader(socket: socket)
            var catalog = SetCatalog(missing.count <= 16 ? try reader.readSets(table, named: missing.sorted()) : try reader.readSets(table))
            if let ours = created[table] { catalog.add(contentsOf: ours) }  // what the batch (re)creates wins
            catalogs[table] = catalog
        }
        return catalogs
    }

    /// The kernel processes the batch inside sendmsg, so every ack is queued when it returns:
    /// drain without blocking until the queue is empty.
    private func readAcks(_ socket: NetlinkSocket, _ batch: Batch, refused: (Int, UInt32) -> Operation?) throws(BackendError) {
        var errors: [Ack] = []
        var overrun = false
        drain: while true {
            let received = try socket.receive(blocking: false) { message throws(BackendError) in
                guard message.pointee.nlmsg_pid == socket.portID else { return }
                if let ack = Ack(message), ack.errno != 0 { errors.append(ack) }
            }
            switch received {
            case .empty: break drain
            case .overrun: overrun = true
            case .messages: break
            }
        }
        guard let first = errors.first else {
            if overrun {
                // Only errors are acked, so lost acks mean the batch failed.
                throw BackendError(errno: ENOBUFS, message: "the kernel refused the batch, but its errors were lost (netlink receive buffer overrun)")
            }
            return
        }
        if first.seq == batch.beginSeq && first.errno == ERESTART {
            throw BackendError(errno: ERESTART, message: "the ruleset changed concurrently (another process committed after generation was read); nothing was applied")
        }
        var message = "the kernel refused the batch, nothing was applied: \(errorText(first.errno))"
        if let text = first.text, !text.isEmpty { message += " (\(text))" }
        if errors.count > 1 { message += "; \(errors.count - 1) more message(s) failed" }
        if overrun { message += "; further errors were lost" }
        let operation = batch.owner(of: first.seq).flatMap { refused($0, first.seq) }
        throw BackendError(errno: first.errno, operation: operation, message: message)
    }

    /// Reads the named tables; absent ones are left out. Per family, tables and chains come in one
    /// dump each, whatever the number of tables asked for, and those of other tables are dropped
    /// on receipt; sets come table by table; then each set's elements and each chain's rules
    /// (see `TableReader`).
    /// Elements are returned in key order, everything else in kernel order.
    /// Several tables (a sharded ruleset) are read by two threads with a socket each.
    public func read(_ tables: [TableRef]) throws(BackendError) -> Ruleset {
        try sockets.withSocket { socket throws(BackendError) in
            let reader = TableReader(socket: socket, second: tables.count > 1 && hasSeveralCPUs ? try NetlinkSocket(netnsPath: netnsPath) : nil)
            return try consistently(socket) { () throws(BackendError) in Ruleset(tables: try reader.read(tables)) }
        }
    }

    /// Every ip and ip6 table in the namespace, ours or not, in the kernel's order, from one
    /// NFT_MSG_GETTABLE dump that reads none of their contents. Tables of the other families
    /// (inet, arp, bridge, netdev), and names nftproxy could not have written, are left out:
    /// `TableRef` cannot name them, and none of them is nftproxy's.
    public func listTables() throws(BackendError) -> [TableRef] {
        try sockets.withSocket { socket throws(BackendError) in
            try TableReader(socket: socket).listTables(family: UInt8(AF_UNSPEC)).compactMap(\.ref)
        }
    }

    /// Runs `body` until the generation is the same before and after it, so that what it read
    /// belongs to one generation (a commit while reading may mix two), at most five times.
    private func consistently<T>(_ socket: NetlinkSocket, _ body: () throws(BackendError) -> T) throws(BackendError) -> T {
        var lastError: BackendError?
        for _ in 0..<5 {
            do {
                let before = try socket.generation()
                let value = try body()
                if try socket.generation() == before { return value }
                lastError = BackendError(errno: EINTR, message: "the ruleset changed while it was being read")
            } catch where error.errno == EINTR {
                lastError = error
            }
        }
        throw lastError ?? BackendError(errno: EINTR, message: "the ruleset kept changing while it was being read")
    }

    /// Whether `error` means the process may not program nf_tables here (no CAP_NET_ADMIN in
    /// the namespace's user namespace, or no access to the namespace file), so the CLI can say
    /// so in one line instead of blaming an operation.
    public static func isNotPermitted(_ error: BackendError) -> Bool {
        error.errno == EPERM || error.errno == EACCES
    }
}
