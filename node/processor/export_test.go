package processor

// ProcessCPU is processCPU for the external benchmarks (processor_test).
var ProcessCPU = processCPU
