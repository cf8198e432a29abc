// swift-tools-version:6.1
// A scheduler author's repository: the scheduler's sources plus Swift tests that boot it
// in throwaway VMs with swift-ktstr.
import PackageDescription

let package = Package(
    name: "SchedulerRepo",
    dependencies: [
        // In your own repo: .package(url: "<swift-ktstr git URL>", from: "<version>")
        .package(name: "swift-ktstr", path: "../.."),
    ],
    targets: [
        .testTarget(
            name: "DepthSchedulerTests",
            dependencies: [.product(name: "KtstrTesting", package: "swift-ktstr")]
        ),
    ]
)
