// shaders/coop_dims.glsl: the fragment dimensions of the cooperative-matrix shaders, written
// against GL_NV_cooperative_matrix. NV matrix types carry no use, so A (kAm x kAk), B (kBk x kBn)
// and the accumulator (kCm x kCn) take their dimensions from distinct specialization constants:
// vk_spirv.cpp's rewrite to SPV_KHR_cooperative_matrix tells the three types apart by these ids
// (10/12/14 for the rows) and gives each its Use. All 16 (16x16x16 fp16 -> fp32 fragments).
layout(constant_id = 10) const uint kAm = 16;
layout(constant_id = 11) const uint kAk = 16;
layout(constant_id = 12) const uint kBk = 16;
layout(constant_id = 13) const uint kBn = 16;
layout(constant_id = 14) const uint kCm = 16;
layout(constant_id = 15) const uint kCn = 16;
