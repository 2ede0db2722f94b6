import Foundation
import Logging
import ProxyController
import ServiceModel
#if canImport(Glibc)
import Glibc
#endif

/// `run --state DIR`: the folder's YAML/JSON files, re-read when one is completely written
/// (inotify close-after-write, move in, delete), after a short quiet period so a burst of
/// writes becomes one reload.
final class StateDirectorySource: Sendable {
    let path: String
    let logger: Logger
    private let descriptor: Int32

    init(path: String, logger: Logger) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CommandFailure("--state \(path) is not a folder")
        }
        self.path = path
        self.logger = logger
        descriptor = inotify_init1(Int32(IN_CLOEXEC))
        guard descriptor >= 0 else { throw CommandFailure("cannot watch \(path): inotify_init1: \(String(cString: strerror(errno)))") }
        let mask = UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO) | UInt32(IN_MOVED_FROM) | UInt32(IN_DELETE) | UInt32(IN_CREATE)
        guard inotify_add_watch(descriptor, path, mask) >= 0 else {
            throw CommandFailure("cannot watch \(path): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }

    func run(into controller: SyncController) async {
        await reload(into: controller, first: true)
        let events = AsyncStream<Void> { continuation in
            let descriptor = self.descriptor
            let thread = Thread {
                var buffer = [UInt8](repeating: 0, count: 64 * 1024)
                while true {
                    let count = read(descriptor, &buffer, buffer.count)
                    if count <= 0 && errno != EINTR { break }
                    if count > 0 { continuation.yield() }
                }
                continuation.finish()
            }
            thread.start()
        }
        var iterator = events.makeAsyncIterator()
        while !Task.isCancelled, await iterator.next() != nil {
            // Let a burst of writes settle into one reload.
            try? await Task.sleep(for: .milliseconds(50))
            await reload(into: controller, first: false)
        }
    }

    private func reload(into controller: SyncController, first: Bool) async {
        let state: ClusterState
        do {
            state = try StateLoader.load([path])
        } catch {
            logger.error("cannot read state folder; keeping the rules as they are", metadata: ["path": "\(path)", "error": "\(error)"])
            return
        }
        for problem in state.problems where problem.skipped {
            logger.warning("object skipped", metadata: ["problem": "\(problem)"])
        }
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: state) }
        if first { await controller.markReady() }
        logger.debug("state folder read", metadata: ["services": "\(state.services.count)"])
    }
}
