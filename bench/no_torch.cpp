// Linked instead of bench_losses_torch.cpp where LibTorch is not available.
namespace bench {
void register_torch() {}
}  // namespace bench
