#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs `first` on the calling thread and, when `parallel`, `second` meanwhile on a thread of its
/// own (otherwise after `first`), and returns both results once both have finished. An error of
/// `first` is thrown before one of `second`; either way both have ended by then. For the big,
/// separable pieces of one-shot work (decoding a long list, reading many tables) on a machine
/// with more than one core.
public func inParallel<A, B, Failure: Error>(if parallel: Bool, _ first: () throws(Failure) -> A,
                                             and second: () throws(Failure) -> B) throws(Failure) -> (A, B) {
    guard parallel else { return (try first(), try second()) }
    return try withoutActuallyEscaping(second) { (second) throws(Failure) -> (A, B) in
        let job = ParallelJob(second)
        var thread = pthread_t()
        let context = Unmanaged.passRetained(job as ParallelBody).toOpaque()
        let created = pthread_create(&thread, nil, { context in
            guard let context else { return nil }
            Unmanaged<ParallelBody>.fromOpaque(context).takeRetainedValue().run()
            return nil
        }, context)
        guard created == 0 else {
            Unmanaged<ParallelBody>.fromOpaque(context).release()
            return (try first(), try second())
        }
        let firstResult = Result { () throws(Failure) in try first() }
        pthread_join(thread, nil)
        return (try firstResult.get(), try job.result!.get())
    }
}

/// Whether splitting work in two can finish sooner: more than one CPU is online.
public let hasSeveralCPUs = sysconf(Int32(_SC_NPROCESSORS_ONLN)) > 1

/// What the started thread runs (not generic, so that a C function can call it).
private class ParallelBody {
    func run() {}
}

private final class ParallelJob<B, Failure: Error>: ParallelBody {
    let body: () throws(Failure) -> B
    var result: Result<B, Failure>?

    init(_ body: @escaping () throws(Failure) -> B) { self.body = body }

    override func run() { result = Result { () throws(Failure) in try body() } }
}
