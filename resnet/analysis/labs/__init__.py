"""The note's four highlights as experiments a student can run: residual vs plain gradient flow and a training
race, a 1202-layer ResNet, BatchNorm step by step, and the cost of group convolution.

Everything here is plain PyTorch (no Gradio); each lab returns numbers and the UI draws them. Each lab is a job
(``resnet.job.Job``: its settings checked, its cost, its run), admitted by ``resnet.budget.admit`` before it builds
anything. ``nets`` holds the networks, ``data`` the built-in shapes, ``loop`` the one training loop, ``cost`` the
counting; one module per lab.
"""
from ...data import SHAPES
from .bn import (BATCH_SIZES, BN_IMAGE_SIZE, MODES, BatchStats, BiasCheck, BNPoolJob, BNSteps, TrainEval,
                 batch_statistics, bias_cancellation, bn_by_hand, bn_input, bn_steps, ensure_statistics,
                 gather_statistics, illustrate_affine, image_pool, image_tensor, lab_copy, stats_untouched,
                 train_vs_eval)
from .bn_run import (BN_RUN_BATCH, BN_RUN_GROUPS, BN_RUN_IMAGES, BN_RUN_VAL, BNBatchRunJob, BNRunUpdate,
                     GroupBatchNorm, bn_batch_run, group_batchnorm)
from .data import real_batch, shapes_dataset
from .deep import DeepNetworkJob, DeepResult, deep_network, deep_network_steps, first_finite_fraction
from .gradient_flow import GradientFlowJob, GradientProfile, gradient_flow, gradient_ratio, layer_gradients
from .group_conv import (BLOCK_PAIR, BlockCost, ConvCost, GroupConvJob, block_cost, conv_costs, conv_formula,
                         count_flops, measure_conv)
from .nets import (CIFAR_NETS, CIFAR_WIDTHS, IMAGENET_NETS, LAB_NETS, SETTINGS, CifarResNet, Setting, count_params,
                   default_size, lab_net, main_path_layers, net_depth, net_title, strip_batchnorm)
from .race import (RACE_IMAGES, RACE_NETS, RACE_WIDTHS, RaceJob, RaceUpdate, race_estimate, racer_title,
                   training_race)
