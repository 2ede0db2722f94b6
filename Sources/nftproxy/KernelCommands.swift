import ArgumentParser
import Foundation
import NftExplain
import NftIR
import NftNetlink
import NftText
import RuleCompiler
import ServiceModel


/// Runs a kernel operation; a permission failure becomes one line and exit 1.
func withKernel<T>(_ what: String, _ body: () throws(BackendError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        if NetlinkBackend.isNotPermitted(error) {
            warn("\(what) needs root (CAP_NET_ADMIN) to read or change nftables in this network namespace; for a dry run use `nftproxy render` or `nftproxy diff --from … --to …`")
            throw ExitCode(1)
        }
        throw CommandFailure("\(what) failed: \(error)")
    }
}

struct Apply: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Program this network namespace's kernel with the rules STATE produces (root).",
        discussion: """
            Reads nftproxy's own tables back from the kernel, computes the smallest change, and sends it \
            as one atomic netlink batch: all of it is applied, or (on any error) none of it. A second \
            apply of the same state sends nothing. Other tables are never read or touched.
            """
    )

    @OptionGroup var node: NodeOptions

    @Argument(help: ArgumentHelp("State files or folders.", valueName: "state"))
    var state: [String]

    func validate() throws {
        if state.isEmpty { throw ValidationError("give at least one STATE file or folder") }
    }

    func run() throws {
        // The batch of a full sync is as large as the ruleset: what is no longer needed (the
        // decoded state, the per-service fragments) is freed before it is built.
        var compilation = try compileState(state, options: node, releasingState: true)
        compilation.assembly = nil
        let backend = NetlinkBackend()
        let current = try withKernel("apply") { () throws(BackendError) in try backend.readOurs() }
        var transaction = Transaction.diff(from: current, to: compilation.ruleset)
        // Session-affinity entries pointing at backends that are gone are deleted in the same batch.
        transaction.operations += Transaction.pruning(current, set: Naming.affinity, companion: Naming.affinityClients, keep: compilation.affinity.keeps)
        if transaction.isEmpty {
            warn("apply: the kernel already has these rules; nothing sent")
            return
        }
        // The operations are now the only holders of the rules and elements, and the backend
        // releases each once it is in the batch (`apply(consuming:)`): at 100k services the
        // batch and the ruleset are each about 500 MiB, and are not both resident at full size.
        compilation.ruleset = Ruleset()
        returnFreeMemory()
        let count = transaction.operations.count
        let started = ContinuousClock.now
        try withKernel("apply") { () throws(BackendError) in try backend.apply(consuming: consume transaction) }
        let elapsed = ContinuousClock.now - started
        warn("apply: \(count) operation(s) committed in one batch in \(elapsed.formatted(.units(allowed: [.milliseconds], width: .narrow)))")
        ProcessEnd.success(keeping: (compilation, current))
    }
}

struct Cleanup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove every table nftproxy made (ip and ip6 nftproxy and its shards nftproxy-NN); nothing else is touched (root).",
        discussion: "Safe to run again: with nothing to remove it says so and exits 0."
    )

    func run() throws {
        let backend = NetlinkBackend()
        // Listed, not read: a table someone filled with rules nftproxy cannot parse still goes.
        let tables = try withKernel("cleanup") { () throws(BackendError) in try backend.ourTables() }
        guard !tables.isEmpty else {
            warn("cleanup: no nftproxy tables here; nothing to remove")
            return
        }
        let transaction = Transaction(tables.map { .deleteTable($0) })
        try withKernel("cleanup") { () throws(BackendError) in try backend.apply(transaction) }
        warn("cleanup: removed \(tables.count) table(s): \(tables.map { "\($0.family.rawValue) \($0.name)" }.joined(separator: ", "))")
    }
}

extension Diff {
    /// What the kernel has now (our tables only).
    static func kernelRuleset() throws -> Ruleset {
        try withKernel("diff") { () throws(BackendError) in try NetlinkBackend().readOurs() }
    }
}
