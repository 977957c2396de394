#version 450
// attention_flash_coop variant d64: head_dim 64 (the body and its contract: attention_flash_coop.glsl).
#extension GL_GOOGLE_include_directive : require
#define HEAD_DIM 64
#include "attention_flash_coop.glsl"
