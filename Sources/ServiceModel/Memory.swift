#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Hands memory that is free but still mapped back to the system (glibc's `malloc_trim`, looked
/// up at run time: Swift's Glibc module does not declare it, and other C libraries may lack it).
/// Freed small objects otherwise stay resident, and whatever is allocated next (a full sync's
/// batch, hundreds of MiB at 100k services) is counted on top of them.
public func returnFreeMemory() {
    typealias Trim = @convention(c) (Int) -> Int32
    guard let symbol = dlsym(nil, "malloc_trim") else { return }  // nil: RTLD_DEFAULT
    _ = unsafeBitCast(symbol, to: Trim.self)(0)
}
