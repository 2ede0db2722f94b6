// swift-tools-version: 6.0
import PackageDescription

// Layering (see ../shared/DESIGN.md): ServiceModel → NftIR → RuleCompiler → NftText / NftNetlink → nftproxy.
// Only NftNetlink imports CNftables; only the nftproxy executable does I/O on files and argv.
let package = Package(
    name: "nftproxy",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "nftproxy", targets: ["nftproxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .target(name: "ServiceModel", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(name: "NftIR", dependencies: ["ServiceModel"]),
        .target(name: "RuleCompiler", dependencies: ["ServiceModel", "NftIR"]),
        .target(name: "NftText", dependencies: ["NftIR"]),
        .target(name: "NftExplain", dependencies: ["ServiceModel", "NftIR", "NftText"]),
        .target(
            name: "CNftables",
            path: "CNftables",
            linkerSettings: [.linkedLibrary("nftnl"), .linkedLibrary("mnl")]
        ),
        .target(name: "NftNetlink", dependencies: ["NftIR", "CNftables"]),
        .executableTarget(
            name: "nftproxy",
            dependencies: [
                "ServiceModel", "NftIR", "RuleCompiler", "NftText", "NftExplain", "NftNetlink",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "ServiceModelTests", dependencies: ["ServiceModel"]),
        .testTarget(
            name: "RuleCompilerTests",
            dependencies: ["ServiceModel", "NftIR", "RuleCompiler", "NftText"],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "NftTextTests", dependencies: ["NftIR", "NftText"]),
        // Needs root: each test works in a fresh network namespace that it removes.
        .testTarget(name: "KernelTests", dependencies: ["ServiceModel", "NftIR", "RuleCompiler", "NftText"]),
        .testTarget(name: "NftNetlinkTests", dependencies: ["NftNetlink", "NftIR", "NftText", "ServiceModel", "RuleCompiler"]),
    ]
)
